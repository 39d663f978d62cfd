//! moto's server: a KMS-compatible service (the KMS JSON API, with real
//! key generation and signatures) on a loopback port, from the venv that
//! scripts/python-env.sh makes. Keys are made and changed through the real
//! AWS SDK ([`KmsAdmin`]), as an operator's tooling would.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Deref;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::kms::KmsAdmin;
use super::venv_python;

pub struct Moto {
    child: Child,
    pub addr: SocketAddr,
    admin: KmsAdmin,
}

impl Moto {
    pub fn start() -> Moto {
        // moto cannot report a port it picked; take a free one and hand it
        // over (the gap between the two is the only race, and nothing
        // retries on it: a clash fails loudly).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new(venv_python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto's server (moto[server] in the test venv)");
        let mut moto = Moto {
            child,
            addr,
            admin: KmsAdmin::new(&format!("http://{addr}")),
        };
        moto.wait_ready();
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("moto's server exited at start: {status}");
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
                && self.admin.answers()
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto's server did not answer on {} within 60 s",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server: from now on its port refuses connections.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keys are made through the admin client.
impl Deref for Moto {
    type Target = KmsAdmin;

    fn deref(&self) -> &KmsAdmin {
        &self.admin
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
