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

use std::any::Any;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use timely::CommunicationConfig;
use timely::communication::Hooks;
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};

use crate::JobFailure;

/// How long processes wait for each other to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

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
    pub fn connect(self) -> Result<(Vec<AllocatorBuilder>, Box<dyn Any + Send>), JobFailure> {
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
                ClusterSetup::LocalProcess { workers, process, addresses, listener }.connect()
            }
            ClusterSetup::LocalProcess { workers, process, addresses, listener } => {
                let sockets = connect_peers(&listener, &addresses, process).map_err(|e| failed(e.to_string()))?;
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

/// Connects to processes `0..me` and accepts `me+1..` on `listener`; each connection starts
/// with the connecting process's index as 8 little-endian bytes.
fn connect_peers(listener: &TcpListener, addresses: &[String], me: usize) -> std::io::Result<Vec<Option<TcpStream>>> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut sockets: Vec<Option<TcpStream>> = (0..addresses.len()).map(|_| None).collect();
    for (index, address) in addresses.iter().enumerate().take(me) {
        let mut stream = loop {
            match TcpStream::connect(address) {
                Ok(stream) => break stream,
                Err(error) if Instant::now() > deadline => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream.set_nodelay(true)?;
        stream.write_all(&(me as u64).to_le_bytes())?;
        sockets[index] = Some(stream);
    }
    listener.set_nonblocking(true)?;
    let mut missing = addresses.len() - me - 1;
    while missing > 0 {
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream.set_nonblocking(false)?;
                stream.set_nodelay(true)?;
                let mut index = [0u8; 8];
                stream.read_exact(&mut index)?;
                let index = u64::from_le_bytes(index) as usize;
                if index <= me || index >= addresses.len() || sockets[index].is_some() {
                    return Err(std::io::Error::other(format!("unexpected connection from process {index}")));
                }
                sockets[index] = Some(stream);
                missing -= 1;
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "peers did not connect in time"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(sockets)
}
