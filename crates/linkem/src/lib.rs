//! A link emulator for Linux kernels without netem: two network namespaces joined by TUN devices
//! and a userspace forwarder that applies, per direction, loss (random or Gilbert-Elliott
//! bursts), rate (serialisation with tail drop), delay with time-correlated jitter, reordering
//! and duplication — seeded, with exact counters.
//!
//! ```text
//!  netns A (10.77.0.1, fd77::1)            this process                netns B (10.77.0.2, fd77::2)
//!  app ── TUN lk0 ══fd══> forwarder  a→b: loss → rate → delay/jitter → reorder → dup ══fd══> TUN lk0 ── app
//!                 <══fd══            b→a: the same pipeline, its own spec          <══fd══
//! ```
//!
//! Bringing a link up needs root (namespaces, TUN devices, a real-time forwarder). The models
//! themselves ([`model`]) are plain code on virtual time and need nothing.
//!
//! ```no_run
//! use linkem::{Link, Profile, Side};
//!
//! let link = Link::up(Profile::L2.spec().seed(7))?;
//! // Run a program on each side; side B reaches side A at `link.addr(Side::A)`.
//! let mut server = link.command(Side::A, "iperf3").arg("-s").spawn()?;
//! let status = link
//!     .command(Side::B, "iperf3")
//!     .args(["-c", &link.addr(Side::A).to_string(), "-t", "5"])
//!     .status()?;
//! server.kill()?;
//! println!("{status}: {:?}", link.counters());
//! // Dropping the link stops the forwarder and removes both namespaces.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod model;
pub mod spec;

mod forward;
#[allow(unsafe_code)]
mod sys;

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    thread::JoinHandle,
    time::Instant,
};

use serde::{Deserialize, Serialize};

pub use model::Counters;
pub use spec::{DirSpec, JitterKind, LinkSpec, Loss, Profile, SpecError};

use forward::{Pipe, Shared};
use model::{Direction, Serializer};

/// One end of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    /// The first namespace (10.77.0.1, fd77::1).
    A,
    /// The second namespace (10.77.0.2, fd77::2).
    B,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Self::A => 0,
            Self::B => 1,
        }
    }
}

/// Both directions' counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCounters {
    /// Packets sent by side A.
    pub a_to_b: Counters,
    /// Packets sent by side B.
    pub b_to_a: Counters,
}

/// Why a link could not be brought up or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Namespaces and TUN devices need root.
    #[error("bringing a link up needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); run as root")]
    NotRoot,
    /// The spec is inconsistent.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A setup command failed.
    #[error("{step} failed: {detail}")]
    Setup {
        /// What was being done.
        step: String,
        /// What the command or the system said.
        detail: String,
    },
    /// A system call failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The TUN device's name inside each namespace.
const DEV: &str = "lk0";
/// Prefix of every namespace this crate creates: `lk<pid>-<n><a|b>`.
const PREFIX: &str = "lk";

static NEXT: AtomicU64 = AtomicU64::new(0);
/// Namespaces of the links alive in this process, for the Ctrl-C teardown.
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// An emulated link between two fresh network namespaces. Dropping it stops the forwarder and
/// deletes both namespaces (also while unwinding from a panic).
#[derive(Debug)]
pub struct Link {
    ns: [String; 2],
    spec: LinkSpec,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    realtime: bool,
}

impl Link {
    /// Creates two namespaces joined through this process, applying `spec`.
    ///
    /// Returns once the forwarder is attached to both devices, so the first packet a program
    /// sends is already carried. Needs root.
    pub fn up(spec: LinkSpec) -> Result<Self, Error> {
        spec.validate()?;
        if !rustix::process::geteuid().is_root() {
            return Err(Error::NotRoot);
        }
        remove_stale();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let ns = [format!("{PREFIX}{pid}-{n}a"), format!("{PREFIX}{pid}-{n}b")];
        let mut link = Self {
            ns,
            spec,
            shared: Arc::new(Shared::default()),
            threads: Vec::new(),
            realtime: false,
        };
        // From here on, dropping `link` removes whatever was created.
        link.create()?;
        Ok(link)
    }

    fn create(&mut self) -> Result<(), Error> {
        let mut fds = Vec::new();
        for side in [Side::A, Side::B] {
            let ns = self.ns[side.index()].clone();
            ip(&["netns", "add", &ns])?;
            LIVE.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(ns.clone());
            let (me, peer) = (addr_v4(side), addr_v4(other(side)));
            let (me6, peer6) = (addr_v6(side), addr_v6(other(side)));
            let steps: [&[&str]; 7] = [
                &["link", "set", "lo", "up"],
                &["tuntap", "add", "dev", DEV, "mode", "tun"],
                // No link-local address: fewer stray packets on the link besides the user's.
                &["link", "set", DEV, "addrgenmode", "none"],
                &[
                    "addr",
                    "add",
                    &format!("{me}/32"),
                    "peer",
                    &format!("{peer}/32"),
                    "dev",
                    DEV,
                ],
                &["addr", "add", &format!("{me6}/128"), "dev", DEV, "nodad"],
                // The default ring of 500 packets overflows under a burst before the forwarder
                // reads it, which would look like link loss.
                &["link", "set", DEV, "txqueuelen", "10000", "up"],
                &["route", "add", &format!("{peer6}/128"), "dev", DEV],
            ];
            for step in steps {
                let mut args = vec!["-n", ns.as_str()];
                args.extend_from_slice(step);
                ip(&args)?;
            }
            fds.push(Arc::new(attach(&netns_path(&ns))?));
        }
        let (Some(b), Some(a)) = (fds.pop(), fds.pop()) else {
            return Err(Error::Setup {
                step: "attaching the TUN devices".into(),
                detail: "a device is missing".into(),
            });
        };
        let start = Instant::now();
        let shared_ser = Arc::new(Mutex::new(Serializer::default()));
        let (realtime_tx, realtime_rx) = std::sync::mpsc::channel();
        for (index, src, dst, spec) in [
            (0, a.clone(), b.clone(), self.spec.a_to_b.clone()),
            (1, b, a, self.spec.b_to_a.clone()),
        ] {
            let serializer = if self.spec.half_duplex {
                shared_ser.clone()
            } else {
                Arc::new(Mutex::new(Serializer::default()))
            };
            let pipe = Pipe {
                index,
                src,
                dst,
                model: Direction::new(spec, self.spec.seed.wrapping_add(index as u64)),
                serializer,
                shared: self.shared.clone(),
                start,
            };
            let realtime_tx = realtime_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("linkem-{index}"))
                .spawn(move || {
                    let _ = realtime_tx.send(sys::realtime(10).is_ok());
                    pipe.run();
                })?;
            self.threads.push(thread);
        }
        drop(realtime_tx);
        // One answer per thread (the threads keep running, so do not wait for the channel's end).
        self.realtime = realtime_rx.iter().take(2).filter(|ok| *ok).count() == 2;
        Ok(())
    }

    /// The spec this link applies.
    pub fn spec(&self) -> &LinkSpec {
        &self.spec
    }

    /// The namespace of `side`, for `ip netns exec NAME ...`.
    pub fn namespace(&self, side: Side) -> &str {
        &self.ns[side.index()]
    }

    /// The IPv4 address of `side` (10.77.0.1 or 10.77.0.2).
    pub fn addr(&self, side: Side) -> IpAddr {
        IpAddr::V4(addr_v4(side))
    }

    /// The IPv6 address of `side` (fd77::1 or fd77::2).
    pub fn addr_v6(&self, side: Side) -> IpAddr {
        IpAddr::V6(addr_v6(side))
    }

    /// A command that runs `program` inside `side`'s namespace (through `ip netns exec`).
    pub fn command(&self, side: Side, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.namespace(side), program]);
        cmd
    }

    /// Moves the calling thread into `side`'s namespace: sockets it opens afterwards, and
    /// threads it spawns (a tokio runtime built here, say), live on that side of the link.
    pub fn enter(&self, side: Side) -> io::Result<()> {
        sys::enter_netns(&netns_path(self.namespace(side)))
    }

    /// Runs `f` on a new thread inside `side`'s namespace.
    pub fn spawn_in<T, F>(&self, side: Side, f: F) -> JoinHandle<io::Result<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let path = netns_path(self.namespace(side));
        std::thread::spawn(move || {
            sys::enter_netns(&path)?;
            Ok(f())
        })
    }

    /// Cuts the link in both directions (every packet dropped and counted as an outage) or
    /// restores it.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::Relaxed);
    }

    /// The counters so far (updated by the forwarder at every wakeup, at least every 20 ms).
    pub fn counters(&self) -> LinkCounters {
        let get = |i: usize| {
            *self.shared.counters[i]
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        LinkCounters {
            a_to_b: get(0),
            b_to_a: get(1),
        }
    }

    /// Whether the forwarder runs in the real-time class (`SCHED_FIFO`). Without it, release
    /// times slip by milliseconds on a busy machine.
    pub fn is_realtime(&self) -> bool {
        self.realtime
    }

    /// Whether a forwarding thread stopped on an error, and which.
    pub fn error(&self) -> Option<String> {
        self.shared
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Tears the link down now and returns the final counters.
    pub fn down(mut self) -> LinkCounters {
        self.stop();
        self.counters()
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // The forwarder's descriptors pin the namespaces: close them first.
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        for ns in &self.ns {
            delete_netns(ns);
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop();
    }
}

/// On Ctrl-C (or SIGTERM), deletes the namespaces of every link alive in this process and exits
/// with status 130. For binaries: a library user's own handler may prefer to drop its links.
pub fn teardown_on_ctrl_c() -> Result<(), Error> {
    ctrlc::set_handler(|| {
        let names = std::mem::take(&mut *LIVE.lock().unwrap_or_else(PoisonError::into_inner));
        for ns in names {
            let _ = ip(&["netns", "del", &ns]);
        }
        std::process::exit(130);
    })
    .map_err(|e| Error::Setup {
        step: "installing the Ctrl-C handler".into(),
        detail: e.to_string(),
    })
}

/// Moves the calling thread into the network namespace named `ns` (as `ip netns` names it):
/// for threads that cannot borrow the [`Link`] ([`Link::enter`] otherwise).
pub fn enter_namespace(ns: &str) -> io::Result<()> {
    sys::enter_netns(&netns_path(ns))
}

/// Whether this process may bring links up.
pub fn can_run() -> bool {
    rustix::process::geteuid().is_root() && Path::new("/dev/net/tun").exists()
}

fn other(side: Side) -> Side {
    match side {
        Side::A => Side::B,
        Side::B => Side::A,
    }
}

fn addr_v4(side: Side) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 1 + side.index() as u8)
}

fn addr_v6(side: Side) -> Ipv6Addr {
    Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1 + side.index() as u16)
}

fn netns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

/// Opens the namespace's TUN device from a thread that enters it (the calling thread stays
/// where it is). Also raises the namespace's socket buffer caps: with the default 208 KB a
/// receiver drops at 100 Mbit/s, and that would look like link loss.
fn attach(ns: &Path) -> Result<OwnedFd, Error> {
    let path = ns.to_path_buf();
    let opened = std::thread::spawn(move || -> io::Result<OwnedFd> {
        sys::enter_netns(&path)?;
        for knob in ["rmem_max", "wmem_max"] {
            // Best effort: older kernels share these caps between namespaces.
            let _ = std::fs::write(format!("/proc/sys/net/core/{knob}"), "8388608");
        }
        sys::open_tun(DEV)
    })
    .join()
    .map_err(|_| Error::Setup {
        step: "opening the TUN device".into(),
        detail: "the thread panicked".into(),
    })?;
    opened.map_err(|e| Error::Setup {
        step: format!("opening {DEV} in {}", ns.display()),
        detail: e.to_string(),
    })
}

/// Runs `ip ARGS`, turning a failure into an error with what `ip` printed.
fn ip(args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::Setup {
            step: format!("ip {}", args.join(" ")),
            detail: format!("cannot run ip (iproute2): {e}"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Setup {
            step: format!("ip {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn delete_netns(ns: &str) {
    let _ = ip(&["netns", "del", ns]);
    LIVE.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|n| n != ns);
}

/// Deletes namespaces left by processes of this crate that died without tearing down
/// (`lk<pid>-...` whose pid is gone).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            delete_netns(&name);
        }
    }
}
