//! `lifebox-loadgen`: simulated devices publishing telemetry over MQTT, cheaply enough that
//! the load generator is not what a benchmark on a small machine measures.
//!
//! `lifebox loadgen` (Python) renders the readings with the project's one generator and
//! starts this binary; it stamps each reading's `ts` at publish time (so ingest can measure
//! publish-to-commit latency), publishes K readings per message over C shared connections or,
//! given `--credentials-file`, over one connection per device logged in with the device's own
//! credential (as a real fleet does; the broker's ACL then lets each publish only its own
//! topics), paced to a rate or as fast as the broker acknowledges, prints progress on stderr
//! once a second and one JSON summary line on stdout.

use std::fs;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

mod args;

use args::Args;

/// Messages a connection may have unacknowledged (and queued towards its event loop).
const WINDOW: u16 = 1000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One device's message: `{"ts":T,<body>` or an array of K such readings, `ts` consecutive.
fn render(out: &mut Vec<u8>, bodies: &[Vec<u8>], first_ts: u64, k: usize, seq: usize) {
    out.clear();
    if k > 1 {
        out.push(b'[');
    }
    for j in 0..k {
        if j > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"ts\":");
        out.extend_from_slice((first_ts + j as u64).to_string().as_bytes());
        out.push(b',');
        out.extend_from_slice(&bodies[(seq + j) % bodies.len()]);
    }
    if k > 1 {
        out.push(b']');
    }
}

struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    failed: AtomicBool,
}

/// Who a connection logs in as: the shared account of `--username`, or one device.
enum Login {
    Shared,
    Device { serial: String, password: String },
}

async fn connection(
    index: usize,
    args: Arc<Args>,
    (login, serials): (Login, Vec<String>),
    bodies: Arc<Vec<Vec<u8>>>,
    quota: Option<u64>,
    counters: Arc<Counters>,
    start: Instant,
) {
    let mut options = MqttOptions::new(
        format!("lifebox-loadgen-{}-{index}", std::process::id()),
        args.host.clone(),
        args.port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(WINDOW);
    options.set_max_packet_size(4 << 20, 4 << 20);
    match login {
        Login::Device { serial, password } => {
            options.set_credentials(serial, password);
        }
        Login::Shared => {
            if let Some(user) = &args.username {
                // The password comes by environment: argv is readable by every local user.
                let password = std::env::var("LIFEBOX_LOADGEN_PASSWORD").unwrap_or_default();
                options.set_credentials(user.clone(), password);
            }
        }
    }
    let (client, mut eventloop) = AsyncClient::new(options, usize::from(WINDOW));
    let poll_counters = Arc::clone(&counters);
    let poller = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    poll_counters.acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(error) => {
                    eprintln!("lifebox-loadgen: connection {index}: {error}");
                    poll_counters.failed.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    });
    let qos = if args.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let topics: Vec<String> = serials
        .iter()
        .map(|s| format!("lifebox/v1/{s}/telemetry"))
        .collect();
    let k = args.per_message;
    // Seconds between two messages of one device; 0 = as fast as possible.
    let interval = if args.rate > 0.0 {
        k as f64 / args.rate
    } else {
        0.0
    };
    let mut next_due: Vec<f64> = (0..topics.len())
        .map(|i| interval * i as f64 / topics.len().max(1) as f64)
        .collect();
    let mut last_ts = vec![0_u64; topics.len()];
    let mut payload = Vec::with_capacity(1024 * k);
    let mut count: u64 = 0;
    'publishing: loop {
        for (i, topic) in topics.iter().enumerate() {
            let elapsed = start.elapsed().as_secs_f64();
            if elapsed >= args.duration || quota.is_some_and(|q| count >= q) {
                break 'publishing;
            }
            if counters.failed.load(Ordering::Relaxed) {
                break 'publishing;
            }
            if interval > 0.0 {
                if next_due[i] > elapsed {
                    tokio::time::sleep(Duration::from_secs_f64(next_due[i] - elapsed)).await;
                }
                next_due[i] += interval;
            }
            // Readings of one device never share a timestamp: (device, time) is their key.
            let ts = now_ms().max(last_ts[i] + 1);
            last_ts[i] = ts + k as u64 - 1;
            render(&mut payload, &bodies, ts, k, count as usize);
            if client
                .publish(topic.as_str(), qos, false, payload.clone())
                .await
                .is_err()
            {
                break 'publishing;
            }
            count += 1;
            counters.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Give the broker time to acknowledge what was sent.
    let wait_until = Instant::now() + Duration::from_secs(30);
    while qos == QoS::AtLeastOnce
        && counters.acked.load(Ordering::Relaxed) < counters.sent.load(Ordering::Relaxed)
        && Instant::now() < wait_until
        && !counters.failed.load(Ordering::Relaxed)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = client.disconnect().await;
    poller.abort();
}

fn read_lines(path: &str) -> Result<Vec<String>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// `serial password` lines (the file is private to the caller; never argv).
fn read_credentials(path: &str) -> Result<Vec<(String, String)>, String> {
    read_lines(path)?
        .into_iter()
        .map(|line| {
            line.split_once(' ')
                .map(|(s, p)| (s.to_owned(), p.to_owned()))
                .ok_or_else(|| format!("{path}: a line is not `serial password`"))
        })
        .collect()
}

/// The connections to open: (login, the serials it publishes for).
fn plan_connections(
    serials: &[String],
    credentials: Option<Vec<(String, String)>>,
    shared: usize,
) -> Vec<(Login, Vec<String>)> {
    if let Some(devices) = credentials {
        return devices
            .into_iter()
            .map(|(serial, password)| {
                let own = vec![serial.clone()];
                (Login::Device { serial, password }, own)
            })
            .collect();
    }
    let n = shared.clamp(1, serials.len());
    (0..n)
        .map(|c| {
            let slice = serials.iter().skip(c).step_by(n).cloned().collect();
            (Login::Shared, slice)
        })
        .collect()
}

fn run(args: Args) -> Result<(), String> {
    let serials = read_lines(&args.serials_file)?;
    let bodies: Vec<Vec<u8>> = read_lines(&args.bodies_file)?
        .into_iter()
        .map(String::into_bytes)
        .collect();
    if serials.is_empty() || bodies.is_empty() {
        return Err("no serials or no reading bodies".into());
    }
    let credentials = match &args.credentials_file {
        Some(path) => Some(read_credentials(path)?),
        None => None,
    };
    if credentials.as_ref().is_some_and(Vec::is_empty) {
        return Err("--credentials-file has no device".into());
    }
    let planned = plan_connections(&serials, credentials, args.connections);
    let connections = planned.len();
    let args = Arc::new(args);
    let bodies = Arc::new(bodies);
    let counters = Arc::new(Counters {
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        failed: AtomicBool::new(false),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for (c, (login, slice)) in planned.into_iter().enumerate() {
            let quota = args.messages.map(|m| {
                let c = c as u64;
                let n = connections as u64;
                m / n + u64::from(c < m % n)
            });
            tasks.push(tokio::spawn(connection(
                c,
                Arc::clone(&args),
                (login, slice),
                Arc::clone(&bodies),
                quota,
                Arc::clone(&counters),
                start,
            )));
        }
        let progress_counters = Arc::clone(&counters);
        let per_message = args.per_message as f64;
        let progress = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let acked = progress_counters.acked.load(Ordering::Relaxed);
                let sent = progress_counters.sent.load(Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64();
                eprintln!(
                    "progress {secs:.1} {sent} {acked} {:.0}",
                    acked as f64 * per_message / secs.max(1e-3)
                );
            }
        });
        for task in tasks {
            let _ = task.await;
        }
        progress.abort();
    });
    let seconds = start.elapsed().as_secs_f64();
    let sent = counters.sent.load(Ordering::Relaxed);
    let acked = if args.qos == 0 {
        sent
    } else {
        counters.acked.load(Ordering::Relaxed)
    };
    println!(
        "{{\"messages\":{acked},\"sent\":{sent},\"readings\":{},\"seconds\":{seconds:.3},\"failed\":{}}}",
        acked * args.per_message as u64,
        counters.failed.load(Ordering::Relaxed)
    );
    if counters.failed.load(Ordering::Relaxed) {
        return Err("a connection failed".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = Args::parse(std::env::args().skip(1)).and_then(run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("lifebox-loadgen: {message}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{plan_connections, render, Login};

    #[test]
    fn credentials_give_one_connection_per_device_logged_in_as_itself() {
        let serials = vec!["A".to_owned(), "B".to_owned()];
        let creds = vec![("A".into(), "pa".into()), ("B".into(), "pb".into())];
        let planned = plan_connections(&serials, Some(creds), 1);
        assert_eq!(planned.len(), 2);
        for (login, own) in &planned {
            match login {
                Login::Device { serial, .. } => assert_eq!(own, &vec![serial.clone()]),
                Login::Shared => panic!("a shared login with credentials"),
            }
        }
    }

    #[test]
    fn without_credentials_the_serials_share_a_few_connections() {
        let serials: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        let planned = plan_connections(&serials, None, 2);
        assert_eq!(planned.len(), 2);
        assert_eq!(planned[0].1, vec!["0", "2", "4"]);
    }

    #[test]
    fn a_single_reading_is_an_object_with_its_ts_first() {
        let mut out = Vec::new();
        render(&mut out, &[b"\"voltage_l1\":230}".to_vec()], 42, 1, 0);
        assert_eq!(out, b"{\"ts\":42,\"voltage_l1\":230}");
    }

    #[test]
    fn several_readings_are_an_array_with_consecutive_ts() {
        let mut out = Vec::new();
        let bodies = [b"\"a\":1}".to_vec(), b"\"b\":2}".to_vec()];
        render(&mut out, &bodies, 10, 3, 1);
        assert_eq!(
            out,
            b"[{\"ts\":10,\"b\":2},{\"ts\":11,\"a\":1},{\"ts\":12,\"b\":2}]"
        );
    }
}
