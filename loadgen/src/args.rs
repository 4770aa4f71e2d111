//! Command-line options (`--name value` pairs; `lifebox loadgen` is the friendly front end).

pub struct Args {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    /// `serial password` lines: one connection per device, logged in as itself.
    pub credentials_file: Option<String>,
    pub serials_file: String,
    pub bodies_file: String,
    pub per_message: usize,
    /// Readings per second per device; 0 = as fast as the broker acknowledges.
    pub rate: f64,
    pub duration: f64,
    pub messages: Option<u64>,
    pub qos: u8,
    pub connections: usize,
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("--{name}: not a valid number: {value:?}"))
}

impl Args {
    pub fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args {
            host: "127.0.0.1".into(),
            port: 1883,
            username: None,
            credentials_file: None,
            serials_file: String::new(),
            bodies_file: String::new(),
            per_message: 1,
            rate: 0.0,
            duration: f64::INFINITY,
            messages: None,
            qos: 1,
            connections: 4,
        };
        while let Some(flag) = argv.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {flag:?}"))?
                .to_owned();
            let value = argv
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            match name.as_str() {
                "host" => parsed.host = value,
                "port" => parsed.port = number(&name, &value)?,
                "username" => parsed.username = Some(value),
                "credentials-file" => parsed.credentials_file = Some(value),
                "serials-file" => parsed.serials_file = value,
                "bodies-file" => parsed.bodies_file = value,
                "per-message" => parsed.per_message = number(&name, &value)?,
                "rate" => parsed.rate = number(&name, &value)?,
                "duration" => parsed.duration = number(&name, &value)?,
                "messages" => parsed.messages = Some(number(&name, &value)?),
                "qos" => parsed.qos = number(&name, &value)?,
                "connections" => parsed.connections = number(&name, &value)?,
                _ => return Err(format!("unknown option --{name}")),
            }
        }
        if parsed.serials_file.is_empty() || parsed.bodies_file.is_empty() {
            return Err("--serials-file and --bodies-file are required".into());
        }
        if parsed.per_message == 0 || parsed.qos > 1 || parsed.rate < 0.0 {
            return Err("--per-message must be ≥ 1, --qos 0 or 1, --rate ≥ 0".into());
        }
        Ok(parsed)
    }
}
