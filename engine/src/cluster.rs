//! Setting up timely's communication for the three shapes a run can take: worker threads
//! in one process; processes of a cluster of hosts named in a hostfile; and local
//! processes started by `weir run --processes P` on 127.0.0.1.
//!
//! Local processes pick their ports without races: each binds `127.0.0.1:0` itself and
//! keeps the listener, tells its launcher the port, and learns everyone's address back.
//! Hostfile processes bind their own line's address. Either way a process then connects to
//! the lower-numbered processes and accepts the higher-numbered ones on the listener it
//! holds, and the connected sockets are handed to timely as they are (timely's own
//! connection code would print to stdout, which `--json` owns).
//!
//! Before a socket is handed to timely, its two ends shake hands ([`Handshake`]): the
//! connecting process sends a magic, its index and the run's attempt id; the accepting
//! one answers with a random nonce; the connecting one proves it knows the cluster's
//! secret with an HMAC-SHA256 over the nonce, the attempt and its index. A connection
//! from another attempt (a stale process of an earlier run), with the wrong secret, or
//! that says nothing within a few seconds is refused and closed, and the cluster keeps
//! waiting for the right one. Processes that have not connected by the deadline are
//! named in the error.

use std::any::Any;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use timely::CommunicationConfig;
use timely::communication::Hooks;
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};

use crate::JobFailure;

/// How long processes wait for each other to connect, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one side of a handshake waits for the other's next message.
const HANDSHAKE_STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// The first bytes of a handshake (and its version).
const MAGIC: &[u8; 8] = b"WEIRCLU2";

/// The longest attempt id a handshake carries.
const MAX_ATTEMPT_BYTES: usize = 256;

/// What the processes of one cluster share and prove to each other when they connect.
#[derive(Clone)]
pub struct Handshake {
    /// The run's attempt id: processes of another attempt are refused.
    pub attempt: String,
    /// The cluster's shared secret (`WEIR_CLUSTER_SECRET`); empty when none was given.
    pub secret: Vec<u8>,
    /// Worker threads per process: every process of a cluster must run as many.
    pub workers: usize,
    /// How long to wait for every peer.
    pub timeout: Duration,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handshake({}, {} s)", self.attempt, self.timeout.as_secs())
    }
}

impl Handshake {
    fn proof(&self, nonce: &[u8; 16], index: u64) -> [u8; 32] {
        // HMAC takes a key of any length; an empty one still binds the attempt and index.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(MAGIC);
        mac.update(nonce);
        mac.update(self.attempt.as_bytes());
        mac.update(&index.to_le_bytes());
        mac.update(&(self.workers as u64).to_le_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The connecting side: sends who it is, answers the nonce, reads the verdict.
    fn join(&self, stream: &mut TcpStream, me: usize) -> std::io::Result<bool> {
        stream.set_read_timeout(Some(HANDSHAKE_STEP_TIMEOUT))?;
        let attempt = self.attempt.as_bytes();
        let mut hello = Vec::with_capacity(8 + 8 + 8 + 4 + attempt.len());
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&(me as u64).to_le_bytes());
        hello.extend_from_slice(&(self.workers as u64).to_le_bytes());
        hello.extend_from_slice(&(attempt.len() as u32).to_le_bytes());
        hello.extend_from_slice(attempt);
        stream.write_all(&hello)?;
        let mut nonce = [0u8; 16];
        stream.read_exact(&mut nonce)?;
        stream.write_all(&self.proof(&nonce, me as u64))?;
        let mut verdict = [0u8; 1];
        stream.read_exact(&mut verdict)?;
        stream.set_read_timeout(None)?;
        Ok(verdict[0] == 1)
    }

    /// The accepting side, up to the verdict: the index that a peer which proved itself
    /// claims, or why it was refused (the refusal already sent). The whole exchange must end
    /// by `deadline`, however slowly the other side drips its bytes; the caller sends the
    /// verdict once it knows whether it wants that index ([`send_verdict`]).
    fn admit(&self, stream: &mut TcpStream, deadline: Instant) -> Result<usize, String> {
        let io = |e: std::io::Error| format!("the handshake broke off ({e})");
        let mut header = [0u8; 28];
        read_exact_by(stream, &mut header, deadline).map_err(io)?;
        if &header[..8] != MAGIC {
            return Err("it is not a Weir process of this version".into());
        }
        let index = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let workers = u64::from_le_bytes(header[16..24].try_into().unwrap_or_default());
        let length = u32::from_le_bytes(header[24..28].try_into().unwrap_or_default()) as usize;
        if length > MAX_ATTEMPT_BYTES {
            return Err("its attempt id is too long".into());
        }
        let mut attempt = vec![0u8; length];
        read_exact_by(stream, &mut attempt, deadline).map_err(io)?;
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| format!("no randomness for a nonce: {e}"))?;
        stream.write_all(&nonce).map_err(io)?;
        let mut proof = [0u8; 32];
        read_exact_by(stream, &mut proof, deadline).map_err(io)?;
        let refuse = |stream: &mut TcpStream, why: String| {
            send_verdict(stream, false);
            Err(why)
        };
        if attempt != self.attempt.as_bytes() {
            let theirs = String::from_utf8_lossy(&attempt).into_owned();
            return refuse(stream, format!("it belongs to another attempt ({theirs}; this one is {})", self.attempt));
        }
        // Constant-time comparison through the MAC's own verification.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(MAGIC);
        mac.update(&nonce);
        mac.update(&attempt);
        mac.update(&index.to_le_bytes());
        mac.update(&workers.to_le_bytes());
        if mac.verify_slice(&proof).is_err() {
            return refuse(stream, "its proof of the cluster secret is wrong (WEIR_CLUSTER_SECRET differs)".into());
        }
        if workers != self.workers as u64 {
            return refuse(
                stream,
                format!(
                    "it runs {workers} worker(s), this process {}; every process of a cluster needs the same --workers",
                    self.workers
                ),
            );
        }
        usize::try_from(index).map_err(|_| format!("it says it is process {index}"))
    }
}

/// Sends the accepting side's verdict; a peer admitted then talks to timely without timeouts.
fn send_verdict(stream: &mut TcpStream, admitted: bool) -> bool {
    stream.write_all(&[u8::from(admitted)]).is_ok() && (!admitted || stream.set_read_timeout(None).is_ok())
}

/// `read_exact` that gives up at `deadline` in all, not per read: a peer that sends one byte
/// just inside each read's timeout cannot hold the handshake open.
fn read_exact_by(stream: &mut TcpStream, mut buffer: &mut [u8], deadline: Instant) -> std::io::Result<()> {
    while !buffer.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the handshake took too long"));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(buffer) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => buffer = &mut buffer[read..],
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Handshakes with connecting processes in flight at once; more are closed unheard.
const MAX_HANDSHAKES_IN_FLIGHT: usize = 32;

/// The shape of the cluster this process belongs to.
#[derive(Debug)]
pub enum ClusterSetup {
    /// `workers` threads in this process, and no other process.
    SingleProcess { workers: usize },
    /// Process `process` of `addresses.len()` (one `host:port` each, from a hostfile).
    Hosts { workers: usize, process: usize, addresses: Vec<String> },
    /// Process `process` of a local cluster, holding its own bound listener.
    LocalProcess { workers: usize, process: usize, addresses: Vec<String>, listener: TcpListener },
}

impl ClusterSetup {
    pub fn workers_per_process(&self) -> usize {
        match self {
            ClusterSetup::SingleProcess { workers }
            | ClusterSetup::Hosts { workers, .. }
            | ClusterSetup::LocalProcess { workers, .. } => *workers,
        }
    }

    pub fn processes(&self) -> usize {
        match self {
            ClusterSetup::SingleProcess { .. } => 1,
            ClusterSetup::Hosts { addresses, .. } | ClusterSetup::LocalProcess { addresses, .. } => addresses.len(),
        }
    }

    /// The index of this process.
    pub fn process(&self) -> usize {
        match self {
            ClusterSetup::SingleProcess { .. } => 0,
            ClusterSetup::Hosts { process, .. } | ClusterSetup::LocalProcess { process, .. } => *process,
        }
    }

    /// Connects the cluster and returns timely's allocator builders, one per worker thread.
    pub fn connect(self, handshake: &Handshake) -> Result<(Vec<AllocatorBuilder>, Box<dyn Any + Send>), JobFailure> {
        let failed = |e: String| JobFailure::external(format!("cannot connect the cluster: {e}"));
        match self {
            ClusterSetup::SingleProcess { workers } => {
                CommunicationConfig::Process(workers.max(1)).try_build().map_err(failed)
            }
            ClusterSetup::Hosts { workers, process, addresses } => {
                let address =
                    addresses.get(process).ok_or_else(|| failed(format!("no address for process {process}")))?;
                let listener =
                    TcpListener::bind(address).map_err(|e| failed(format!("cannot listen on {address}: {e}")))?;
                ClusterSetup::LocalProcess { workers, process, addresses, listener }.connect(handshake)
            }
            ClusterSetup::LocalProcess { workers, process, addresses, listener } => {
                let sockets = connect_peers(&listener, &addresses, process, handshake).map_err(failed)?;
                let hooks = Hooks::default();
                let process_builders = ProcessBuilder::new_typed_vector(workers.max(1), hooks.refill.clone(), None);
                let (builders, guard) =
                    initialize_networking_from_sockets(process_builders, sockets, process, workers.max(1), hooks)
                        .map_err(|e| failed(e.to_string()))?;
                Ok((builders.into_iter().map(AllocatorBuilder::Tcp).collect(), Box::new(guard)))
            }
        }
    }
}

/// How long a connection to a peer may go without any sign of life (an ACK of data sent,
/// or of a keepalive probe while idle) before it fails. A busy peer still answers: the
/// kernel acknowledges, not the application. Only a dead host or a cut link stays silent.
pub const PEER_SILENCE_LIMIT: Duration = Duration::from_secs(10);

/// Makes a silent peer an error within [`PEER_SILENCE_LIMIT`]: TCP keepalive probes after
/// 4 s idle, every second, 6 of them; and `TCP_USER_TIMEOUT` for data left unacknowledged.
/// Timely's network threads stop the process on a connection's error (its "timely
/// communication error" panic, which the binary reports as a lost peer), so a run with a
/// lost peer fails instead of waiting forever.
fn watch_peer(stream: &TcpStream) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(4))
        .with_interval(Duration::from_secs(1))
        .with_retries(6);
    socket.set_tcp_keepalive(&keepalive)?;
    socket.set_tcp_user_timeout(Some(PEER_SILENCE_LIMIT))
}

/// Connects to processes `0..me` and accepts `me+1..` on `listener`, shaking hands with
/// each; refused connections are closed and waited past. Fails naming the processes that
/// have not connected by the deadline.
fn connect_peers(
    listener: &TcpListener,
    addresses: &[String],
    me: usize,
    handshake: &Handshake,
) -> Result<Vec<Option<TcpStream>>, String> {
    let deadline = Instant::now() + handshake.timeout;
    let late = |sockets: &[Option<TcpStream>]| {
        let missing: Vec<String> = sockets
            .iter()
            .enumerate()
            .filter(|(index, socket)| *index != me && socket.is_none())
            .map(|(index, _)| format!("process {index} ({})", addresses[index]))
            .collect();
        format!("{} did not connect within {} s", missing.join(", "), handshake.timeout.as_secs())
    };
    let mut sockets: Vec<Option<TcpStream>> = (0..addresses.len()).map(|_| None).collect();
    for index in 0..me {
        let address = &addresses[index];
        loop {
            if Instant::now() > deadline {
                return Err(late(&sockets));
            }
            let Ok(mut stream) = TcpStream::connect(address) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            stream.set_nodelay(true).and_then(|()| watch_peer(&stream)).map_err(|e| e.to_string())?;
            match handshake.join(&mut stream, me) {
                Ok(true) => {
                    sockets[index] = Some(stream);
                    break;
                }
                Ok(false) => {
                    return Err(format!(
                        "process {index} ({address}) refused this one: their attempt, cluster secret (WEIR_CLUSTER_SECRET) or --workers differ (its log says which)"
                    ));
                }
                // Not up yet, or restarting: try again until the deadline.
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    // Each connection shakes hands on a thread of its own, within HANDSHAKE_STEP_TIMEOUT in
    // all, so a slow or silent intruder delays nobody; this loop hands out the verdicts.
    let (done, handshakes) = std::sync::mpsc::channel::<(Result<usize, String>, TcpStream, std::net::SocketAddr)>();
    let mut in_flight = 0usize;
    let mut missing = addresses.len() - me - 1;
    while missing > 0 {
        while let Ok((admitted, mut stream, from)) = handshakes.try_recv() {
            in_flight -= 1;
            let wanted = |index: usize| index > me && index < addresses.len() && sockets[index].is_none();
            match admitted {
                Ok(index) if wanted(index) => {
                    if send_verdict(&mut stream, true) {
                        sockets[index] = Some(stream);
                        missing -= 1;
                    }
                }
                Ok(index) => {
                    send_verdict(&mut stream, false);
                    tracing::warn!(%from, "refused a connection to the cluster: it says it is process {index}, which is not one this process waits for");
                }
                Err(why) => tracing::warn!(%from, "refused a connection to the cluster: {why}"),
            }
        }
        if missing == 0 {
            break;
        }
        match listener.accept() {
            Ok((mut stream, from)) if in_flight < MAX_HANDSHAKES_IN_FLIGHT => {
                let set_up = stream
                    .set_nonblocking(false)
                    .and_then(|()| stream.set_nodelay(true))
                    .and_then(|()| watch_peer(&stream));
                if let Err(error) = set_up {
                    tracing::warn!(%from, "refused a connection to the cluster: {error}");
                    continue;
                }
                in_flight += 1;
                let (handshake, done) = (handshake.clone(), done.clone());
                std::thread::spawn(move || {
                    let admitted = handshake.admit(&mut stream, Instant::now() + HANDSHAKE_STEP_TIMEOUT);
                    let _ = done.send((admitted, stream, from));
                });
            }
            Ok((_, from)) => tracing::warn!(%from, "refused a connection to the cluster: too many handshakes at once"),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(late(&sockets));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => return Err(error.to_string()),
        }
    }
    Ok(sockets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(attempt: &str, secret: &[u8]) -> Handshake {
        Handshake { attempt: attempt.into(), secret: secret.to_vec(), workers: 1, timeout: Duration::from_secs(5) }
    }

    /// Process 0 listens; process 1 (and intruders) connect.
    fn listen() -> (TcpListener, Vec<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        (listener, vec![address, "127.0.0.1:1".into()])
    }

    #[test]
    fn the_right_peer_joins_and_intruders_are_refused_while_the_cluster_waits() {
        let (first, second) = (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
        let addresses = vec![first.local_addr().unwrap().to_string(), second.local_addr().unwrap().to_string()];
        let patient =
            |attempt: &str, secret: &[u8]| Handshake { timeout: Duration::from_secs(60), ..handshake(attempt, secret) };
        let target = addresses[0].clone();
        let (ours, theirs) = (patient("run-1.new", b"s3cret"), addresses.clone());
        let intruders_then_peer = std::thread::spawn(move || {
            let try_join = |h: Handshake| {
                let mut stream = TcpStream::connect(&target).unwrap();
                h.join(&mut stream, 1).unwrap_or(false)
            };
            let stale = try_join(handshake("run-1.old", b"s3cret"));
            let wrong_secret = try_join(handshake("run-1.new", b"guess"));
            let other_width = try_join(Handshake { workers: 4, ..handshake("run-1.new", b"s3cret") });
            // Says something that is not a handshake, then nothing: refused after a step's timeout.
            let mut silent = TcpStream::connect(&target).unwrap();
            silent.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            // The real process 1, which retries until process 0 gets to it.
            let joined = connect_peers(&second, &theirs, 1, &ours).map(|sockets| sockets[0].is_some());
            drop(silent);
            (stale, wrong_secret, other_width, joined)
        });
        let sockets = connect_peers(&first, &addresses, 0, &patient("run-1.new", b"s3cret")).unwrap();
        assert!(sockets[1].is_some());
        assert_eq!(intruders_then_peer.join().unwrap(), (false, false, false, Ok(true)));
    }

    /// An intruder that drips a byte just inside each read's timeout once held the accept
    /// loop for good, and the cluster missed its deadline: handshakes now run side by side
    /// and end within a step's timeout in all.
    #[test]
    fn a_dripping_intruder_delays_nobody() {
        let (first, second) = (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
        let addresses = vec![first.local_addr().unwrap().to_string(), second.local_addr().unwrap().to_string()];
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (target, dripping) = (addresses[0].clone(), stop.clone());
        let drip = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(&target).unwrap();
            let mut sent = 0;
            while !dripping.load(std::sync::atomic::Ordering::Relaxed) && sent < MAGIC.len() {
                if stream.write_all(&MAGIC[sent..=sent]).is_err() {
                    break;
                }
                sent += 1;
                std::thread::sleep(Duration::from_millis(400));
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        let theirs = addresses.clone();
        let ours = Handshake { timeout: Duration::from_secs(3), ..handshake("a", b"s") };
        let peer_side = ours.clone();
        let peer = std::thread::spawn(move || connect_peers(&second, &theirs, 1, &peer_side).map(|s| s[0].is_some()));
        let started = Instant::now();
        let sockets = connect_peers(&first, &addresses, 0, &ours).unwrap();
        assert!(sockets[1].is_some() && started.elapsed() < Duration::from_secs(3));
        assert_eq!(peer.join().unwrap(), Ok(true));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        drip.join().unwrap();
    }

    #[test]
    fn a_peer_that_never_comes_is_named_after_the_deadline() {
        let (listener, addresses) = listen();
        let short = Handshake { timeout: Duration::from_millis(300), ..handshake("a", b"") };
        let error = connect_peers(&listener, &addresses, 0, &short).unwrap_err();
        assert!(error.contains("process 1 (127.0.0.1:1) did not connect within 0 s"), "{error}");
    }

    #[test]
    fn a_joiner_refused_by_its_peer_says_so() {
        let (first, second) = (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
        let addresses = vec![first.local_addr().unwrap().to_string(), second.local_addr().unwrap().to_string()];
        let theirs = addresses.clone();
        let peer = std::thread::spawn(move || {
            connect_peers(&first, &theirs, 0, &Handshake { timeout: Duration::from_secs(2), ..handshake("a", b"one") })
        });
        let error = connect_peers(&second, &addresses, 1, &handshake("a", b"two")).unwrap_err();
        assert!(error.contains("process 0") && error.contains("refused this one"), "{error}");
        assert!(peer.join().unwrap().is_err(), "process 0 is still waiting for a process 1 it can trust");
    }
}
