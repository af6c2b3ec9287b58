//! Cluster mode: which process this is, how the processes connect, and what happens when one
//! goes away.
//!
//! The processes connect to each other before timely starts: process `p` listens on its
//! hostfile address for the processes after it and connects to those before it, retrying until
//! they are up (after 1 ms, then twice as long each time, up to 50 ms). Each connection starts
//! with a handshake that names the process and checks that both sides run the same `-n` and
//! `-w`, so a mistyped command line is a clear error rather than a hang. (timely's own set-up
//! polls for connections once a second, which cost every cluster start about a second.) The
//! connected sockets are then handed to timely's network layer.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::ProcessBuilder;
use timely::communication::{AllocatorBuilder, Hooks};

/// This process's place in a cluster: one timely computation over every process's workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// This process's index (0 holds worker 0: the store writer and a file source).
    pub process: usize,
    /// `host:port` of every process, process 0 first.
    pub addresses: Vec<String>,
}

impl Cluster {
    /// The first `processes` lines of a hostfile (`host:port` per line; blank lines and `#`
    /// comments ignored).
    pub fn from_hostfile(text: &str, processes: usize, process: usize) -> Result<Cluster, String> {
        let addresses: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .take(processes)
            .map(str::to_owned)
            .collect();
        if addresses.len() < processes {
            return Err(format!(
                "the hostfile lists {} process(es) but -n is {processes}",
                addresses.len()
            ));
        }
        if process >= processes {
            return Err(format!(
                "-p {process} is not a process of -n {processes} (0..{processes})"
            ));
        }
        if let Some(bad) = addresses.iter().find(|a| {
            a.rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        }) {
            return Err(format!("hostfile line `{bad}` is not host:port"));
        }
        Ok(Cluster { process, addresses })
    }

    /// Whether this process holds worker 0 (it writes the store's checkpoints).
    pub fn leads(cluster: Option<&Cluster>) -> bool {
        cluster.is_none_or(|c| c.process == 0)
    }
}

/// When a peer process goes away, timely's network threads panic with a message starting
/// "timely communication error"; turn that into a clear error and a prompt exit rather than a
/// hung or half-stopped process. Nothing partial is committed: every epoch is one transaction.
pub(super) fn exit_when_a_peer_fails() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if message.starts_with("timely communication error") {
                eprintln!(
                    "error: a process of the cluster went away ({message}); stopping. The store holds whole epochs only: restart every process to resume from its last checkpoint."
                );
                std::process::exit(3);
            }
            previous(info);
        }));
    });
}

/// The first eight bytes of every handshake.
const HANDSHAKE_MAGIC: [u8; 8] = *b"riskflow";
/// How long a peer may take to send its handshake once connected.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// The first pause between attempts to reach a process that is not listening yet: short,
/// because processes started together are usually a few milliseconds apart (a refused
/// connection costs little). Each pause is twice the last, up to [`LONGEST_CONNECT_RETRY`].
const FIRST_CONNECT_RETRY: Duration = Duration::from_millis(1);
/// The longest pause between attempts to reach a process that is not listening yet.
const LONGEST_CONNECT_RETRY: Duration = Duration::from_millis(50);
/// How often a process that waits for its peers says so in the log.
const WAITING_NOTICE: Duration = Duration::from_secs(10);

/// What each side of a connection tells the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Handshake {
    process: u64,
    processes: u64,
    workers: u64,
}

impl Handshake {
    fn write_to(self, stream: &mut TcpStream) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(32);
        bytes.extend_from_slice(&HANDSHAKE_MAGIC);
        for n in [self.process, self.processes, self.workers] {
            bytes.extend_from_slice(&n.to_le_bytes());
        }
        stream.write_all(&bytes)
    }

    /// `Ok(None)` when the peer is not a riskflow process.
    fn read_from(stream: &mut TcpStream) -> io::Result<Option<Handshake>> {
        let mut bytes = [0u8; 32];
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        stream.read_exact(&mut bytes)?;
        stream.set_read_timeout(None)?;
        if bytes[..8] != HANDSHAKE_MAGIC {
            return Ok(None);
        }
        let number =
            |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("eight bytes"));
        Ok(Some(Handshake {
            process: number(1),
            processes: number(2),
            workers: number(3),
        }))
    }

    /// Why `peer` cannot be part of the cluster `self` is in, if it cannot.
    fn mismatch(self, peer: Handshake, address: &str) -> Option<String> {
        (peer.processes != self.processes || peer.workers != self.workers).then(|| {
            format!(
                "process {} at {address} runs with -n {} -w {}, but this process (-p {}) with -n {} -w {}: every process of a cluster needs the same -n and -w",
                peer.process, peer.processes, peer.workers, self.process, self.processes, self.workers
            )
        })
    }
}

impl Cluster {
    /// Connects to every other process of the cluster and starts timely's network threads over
    /// those connections: the allocators of this process's `workers` workers, and the guard that
    /// keeps the network threads (for `timely::execute::execute_from`).
    pub(super) fn allocators(
        &self,
        workers: usize,
    ) -> Result<(Vec<AllocatorBuilder>, Box<dyn std::any::Any + Send>), String> {
        tracing::info!(
            process = self.process,
            processes = self.addresses.len(),
            workers,
            "Connecting to the other processes of the cluster."
        );
        let sockets = self.connect(workers)?;
        let hooks = Hooks::default();
        let local =
            ProcessBuilder::new_typed_vector(workers, hooks.refill.clone(), hooks.spill.clone());
        let (builders, guard) =
            initialize_networking_from_sockets(local, sockets, self.process, workers, hooks)
                .map_err(|e| format!("the cluster's network threads could not start: {e}"))?;
        Ok((
            builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
            Box::new(guard),
        ))
    }

    /// One connection per other process, in process order (`None` at this process's place).
    fn connect(&self, workers: usize) -> Result<Vec<Option<TcpStream>>, String> {
        let me = Handshake {
            process: self.process as u64,
            processes: self.addresses.len() as u64,
            workers: workers as u64,
        };
        let own_address = &self.addresses[self.process];
        let listener = if self.process + 1 < self.addresses.len() {
            Some(TcpListener::bind(own_address).map_err(|e| {
                format!(
                    "process {} cannot listen on {own_address} (its hostfile line): {e}",
                    self.process
                )
            })?)
        } else {
            None
        };
        // Accept the later processes while connecting to the earlier ones: process 1 may be
        // waiting for process 0 while process 2 already waits for process 1.
        let accepting = listener.map(|listener| {
            let addresses = self.addresses.clone();
            std::thread::spawn(move || accept_later(&listener, me, &addresses))
        });
        let mut sockets: Vec<Option<TcpStream>> = self.addresses[..self.process]
            .iter()
            .enumerate()
            .map(|(process, address)| connect_to(process, address, me).map(Some))
            .collect::<Result<_, _>>()?;
        sockets.push(None);
        if let Some(accepting) = accepting {
            let later = accepting
                .join()
                .map_err(|_| "accepting cluster connections panicked".to_owned())??;
            sockets.extend(later.into_iter().map(Some));
        }
        Ok(sockets)
    }
}

/// Connects to the earlier process `process` at `address`, retrying until it listens.
fn connect_to(process: usize, address: &str, me: Handshake) -> Result<TcpStream, String> {
    let failed =
        |e: io::Error| format!("the handshake with process {process} at {address} failed: {e}");
    let mut noticed = Instant::now();
    let mut retry = FIRST_CONNECT_RETRY;
    let mut stream = loop {
        let error = match TcpStream::connect(address) {
            // A connection to a local port nobody listens on yet can be the kernel connecting
            // the socket to itself (its ephemeral port drawn equal to the target's): it would
            // read back its own handshake. Drop it and try again.
            Ok(stream) if is_connected_to_itself(&stream) => "connected to itself".to_owned(),
            Ok(stream) => break stream,
            Err(error) => error.to_string(),
        };
        if noticed.elapsed() >= WAITING_NOTICE {
            tracing::warn!(
                process,
                address,
                error,
                "Still waiting for an earlier process of the cluster to listen."
            );
            noticed = Instant::now();
        }
        std::thread::sleep(retry);
        retry = (retry * 2).min(LONGEST_CONNECT_RETRY);
    };
    stream.set_nodelay(true).map_err(failed)?;
    me.write_to(&mut stream).map_err(failed)?;
    match Handshake::read_from(&mut stream).map_err(failed)? {
        Some(peer) if peer.process == process as u64 => match me.mismatch(peer, address) {
            Some(why) => Err(why),
            None => Ok(stream),
        },
        Some(peer) => Err(format!(
            "{address} is process {} of a cluster, but the hostfile lists it as process {process}",
            peer.process
        )),
        None => Err(format!(
            "{address} (process {process} in the hostfile) is not a riskflow process"
        )),
    }
}

fn is_connected_to_itself(stream: &TcpStream) -> bool {
    matches!((stream.local_addr(), stream.peer_addr()), (Ok(local), Ok(peer)) if local == peer)
}

/// Accepts the processes after `me`, in whatever order they come; connections that are not
/// riskflow processes are dropped.
fn accept_later(
    listener: &TcpListener,
    me: Handshake,
    addresses: &[String],
) -> Result<Vec<TcpStream>, String> {
    let first = me.process as usize + 1;
    let mut later: Vec<Option<TcpStream>> = (first..addresses.len()).map(|_| None).collect();
    while later.iter().any(Option::is_none) {
        let (mut stream, from) = listener
            .accept()
            .map_err(|e| format!("accepting cluster connections failed: {e}"))?;
        let peer = match Handshake::read_from(&mut stream) {
            Ok(Some(peer)) => peer,
            Ok(None) | Err(_) => {
                tracing::warn!(%from, "Dropped a connection to the cluster port that is not a riskflow process.");
                continue;
            }
        };
        let slot = (peer.process as usize)
            .checked_sub(first)
            .filter(|&i| i < later.len() && later[i].is_none());
        let address = addresses
            .get(peer.process as usize)
            .map_or("?", String::as_str);
        let answered = stream
            .set_nodelay(true)
            .and_then(|()| me.write_to(&mut stream));
        if let Some(why) = me.mismatch(peer, address) {
            return Err(why);
        }
        let Some(slot) = slot else {
            return Err(format!(
                "a process at {from} says it is process {} of {}, which has already connected or does not connect to process {}",
                peer.process, peer.processes, me.process
            ));
        };
        answered.map_err(|e| format!("the handshake with process {} failed: {e}", peer.process))?;
        later[slot] = Some(stream);
    }
    Ok(later.into_iter().flatten().collect())
}
