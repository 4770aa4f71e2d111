//! The API load client of `benchmarks/api.py`: the same calls and the same JSON report as
//! its Python worker, on a fraction of the CPU, so that the server gets the cores.
//!
//! `lifebox-apiload --target 127.0.0.1:PORT --method check|get_me|get_device --token JWT
//!  --devices ID,ID,... --seconds 5 --concurrency 32 [--rate CALLS_PER_S] [--channels 4]`
//!
//! Closed loop (`--rate 0`): `concurrency` calls always in flight. Open loop: one call every
//! 1/rate seconds, whatever the previous ones do. Prints
//! `{"count": N, "elapsed": S, "latencies": [S, ...]}` on stdout.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

/// `grpc.health.v1.HealthCheckRequest`, `lifebox.v1.GetMeRequest` (no fields) and
/// `lifebox.v1.GetDeviceRequest` all fit one message: an optional string in field 1.
#[derive(Clone, PartialEq, prost::Message)]
struct Request {
    #[prost(string, tag = "1")]
    text: String,
}

/// Replies are decoded into a message that keeps no field: the bytes are read and checked
/// as protobuf, the fields skipped (the Python worker builds every field; a real client
/// would too, which costs it more than it costs this one).
#[derive(Clone, PartialEq, prost::Message)]
struct Reply {}

struct Args {
    target: String,
    method: String,
    token: String,
    devices: Vec<String>,
    seconds: f64,
    concurrency: usize,
    rate: f64,
    channels: usize,
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("--{name}: not a valid number: {value:?}"))
}

impl Args {
    fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args {
            target: String::new(),
            method: "check".into(),
            token: String::new(),
            devices: Vec::new(),
            seconds: 5.0,
            concurrency: 32,
            rate: 0.0,
            channels: 4,
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
                "target" => parsed.target = value,
                "method" => parsed.method = value,
                "token" => parsed.token = value,
                "devices" => {
                    parsed.devices = value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                "seconds" => parsed.seconds = number(&name, &value)?,
                "concurrency" => parsed.concurrency = number(&name, &value)?,
                "rate" => parsed.rate = number(&name, &value)?,
                "channels" => parsed.channels = number(&name, &value)?,
                _ => return Err(format!("unknown option --{name}")),
            }
        }
        if parsed.target.is_empty() {
            return Err("--target is required".into());
        }
        if parsed.method == "get_device" && parsed.devices.is_empty() {
            return Err("--method get_device needs --devices".into());
        }
        Ok(parsed)
    }
}

/// One kind of call: its path, its requests (cycled through) and its metadata.
struct Call {
    path: &'static str,
    requests: Vec<Request>,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Call {
    fn new(args: &Args) -> Result<Call, String> {
        let bearer = format!("Bearer {}", args.token)
            .parse()
            .map_err(|_| "--token is not valid metadata".to_owned())?;
        let plain = vec![Request::default()];
        Ok(match args.method.as_str() {
            "check" => Call {
                path: "/grpc.health.v1.Health/Check",
                requests: plain,
                authorization: None,
            },
            "get_me" => Call {
                path: "/lifebox.v1.AuthService/GetMe",
                requests: plain,
                authorization: Some(bearer),
            },
            "get_device" => Call {
                path: "/lifebox.v1.DeviceService/GetDevice",
                requests: args
                    .devices
                    .iter()
                    .map(|id| Request { text: id.clone() })
                    .collect(),
                authorization: Some(bearer),
            },
            other => return Err(format!("unknown --method {other:?}")),
        })
    }

    async fn once(&self, channel: Channel, turn: usize) -> Result<(), tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        // A cheap, deterministic spread over the devices (the Python worker picks at random).
        let body = self.requests[turn.wrapping_mul(7919) % self.requests.len()].clone();
        let mut request = tonic::Request::new(body);
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        let codec = ProstCodec::<Request, Reply>::default();
        grpc.unary(request, PathAndQuery::from_static(self.path), codec)
            .await
            .map(|_| ())
    }
}

struct Load {
    call: Call,
    channels: Vec<Channel>,
    latencies: RefCell<Vec<f64>>,
    turns: std::cell::Cell<usize>,
}

impl Load {
    /// One timed call, on the next channel in turn; a failed call stops the run.
    async fn timed(&self) {
        let turn = self.turns.get();
        self.turns.set(turn.wrapping_add(1));
        let channel = self.channels[turn % self.channels.len()].clone();
        let began = Instant::now();
        if let Err(status) = self.call.once(channel, turn).await {
            eprintln!("lifebox-apiload: {} failed: {status}", self.call.path);
            std::process::exit(1);
        }
        self.latencies
            .borrow_mut()
            .push(began.elapsed().as_secs_f64());
    }
}

async fn run(args: Args) -> Result<String, String> {
    let endpoint = Endpoint::from_shared(format!("http://{}", args.target))
        .map_err(|e| format!("--target: {e}"))?;
    let mut channels = Vec::new();
    for _ in 0..args.channels.max(1) {
        // One connection each (connect, not a lazy balanced channel).
        channels.push(endpoint.connect().await.map_err(|e| e.to_string())?);
    }
    let load = Rc::new(Load {
        call: Call::new(&args)?,
        channels,
        latencies: RefCell::new(Vec::new()),
        // Processes start at different places in the device list, as the Python workers,
        // which pick at random, do.
        turns: std::cell::Cell::new(std::process::id() as usize),
    });
    for _ in 0..20 {
        load.timed().await; // warm up the connections and the server's caches
    }
    load.latencies.borrow_mut().clear();
    let started = Instant::now();
    let stop = started + Duration::from_secs_f64(args.seconds);
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let mut tasks = Vec::new();
            if args.rate > 0.0 {
                let interval = Duration::from_secs_f64(1.0 / args.rate);
                let mut due = started;
                while due < stop {
                    tokio::time::sleep_until(due.into()).await;
                    let load = Rc::clone(&load);
                    tasks.push(tokio::task::spawn_local(async move { load.timed().await }));
                    due += interval;
                }
            } else {
                for _ in 0..args.concurrency {
                    let load = Rc::clone(&load);
                    tasks.push(tokio::task::spawn_local(async move {
                        while Instant::now() < stop {
                            load.timed().await;
                        }
                    }));
                }
            }
            for task in tasks {
                task.await.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        })
        .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let latencies = load.latencies.borrow();
    let list: Vec<String> = latencies.iter().map(|s| format!("{s:.7}")).collect();
    Ok(format!(
        "{{\"count\": {}, \"elapsed\": {elapsed:.6}, \"latencies\": [{}]}}",
        latencies.len(),
        list.join(", ")
    ))
}

fn main() {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("lifebox-apiload: {message}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(report) => println!("{report}"),
        Err(message) => {
            eprintln!("lifebox-apiload: {message}");
            std::process::exit(1);
        }
    }
}
