//! A proxy under test as a child process: started pinned to its core,
//! asked to stop (SIGTERM) and then killed, with every descendant, when
//! dropped, so that no nginx worker outlives a failed run.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::procstat;

pub struct Proc {
    pub name: &'static str,
    child: Child,
}

/// `program args…`, under `taskset -c CORE` when a core is given (taskset
/// execs the program, so the child's pid is the program's).
pub fn command(program: &Path, core: Option<usize>) -> Command {
    match core {
        Some(core) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(core.to_string()).arg(program);
            command
        }
        None => Command::new(program),
    }
}

impl Proc {
    pub fn spawn(name: &'static str, mut command: Command, log: &Path) -> anyhow::Result<Proc> {
        let out = std::fs::File::create(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc { name, child })
    }

    /// For a child whose stderr the caller reads (kakunin's start line).
    pub fn from_child(name: &'static str, child: Child) -> Proc {
        Proc { name, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with `log`'s text if the process has exited.
    pub fn check_alive(&mut self, log: &Path) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            anyhow::bail!("{} exited ({status}):\n{text}", self.name);
        }
        Ok(())
    }

    /// Waits until `addr` accepts TCP connections.
    pub fn wait_listening(&mut self, addr: SocketAddr, log: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.check_alive(log)?;
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("{} is not listening on {addr} after 15 s", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Each descendant with its start time, so that a pid reused after
        // it exited is not signalled.
        let pids: Vec<(u32, Option<u64>)> = procstat::tree(self.child.id())
            .into_iter()
            .map(|pid| (pid, procstat::start_time(pid)))
            .collect();
        // SIGTERM first: nginx's master then stops its worker itself.
        if let Some(pid) =
            rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Whatever of the tree is left (a worker whose master was killed).
        for (pid, started) in pids.into_iter().skip(1) {
            if started.is_none() || procstat::start_time(pid) != started {
                continue;
            }
            if let Some(pid) = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap_or(0)) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// A free loopback port, for servers that cannot report the port they
/// bound (nginx, HAProxy). Another process could take it before the server
/// binds; the server's start would then fail loudly.
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}
