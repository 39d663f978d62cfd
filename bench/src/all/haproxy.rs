//! HAProxy (Debian's package) as the TLS-originating proxy: one thread,
//! `server … ssl crt … ca-file … verify required sni …`, connections to the
//! upstream kept and shared (`http-reuse always`), and one log line per
//! request (`option httplog`) to stdout, which goes to a file: HAProxy
//! has no file logger of its own, and this is as near to Kakunin's audit
//! file as it gets without a syslog daemon.

use std::net::SocketAddr;
use std::path::Path;

use super::child::{self, Proc};
use super::paths::Files;

pub struct Haproxy {
    pub proc: Proc,
    pub addr: SocketAddr,
}

fn config(bundle: &Path, ca: &Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    let host = super::paths::HOST;
    format!(
        r#"global
    nbthread 1
    maxconn 8192
    log stdout format raw local0
defaults
    mode http
    log global
    option httplog
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
frontend agents
    bind {listen}
    default_backend exchange
backend exchange
    server exchange {upstream} ssl crt {bundle} ca-file {ca} verify required sni str({host}) verifyhost {host} alpn http/1.1
"#,
        bundle = bundle.display(),
        ca = ca.display(),
    )
}

impl Haproxy {
    pub fn start(
        files: &Files,
        dir: &Path,
        upstream: SocketAddr,
        core: Option<usize>,
    ) -> anyhow::Result<Haproxy> {
        std::fs::create_dir_all(dir)?;
        let listen = child::free_port()?;
        let conf = dir.join("haproxy.cfg");
        std::fs::write(
            &conf,
            config(&files.agent_bundle, &files.ca, listen, upstream),
        )?;
        // Request log lines and HAProxy's own messages both go here.
        let log = dir.join("access.log");
        let mut command = child::command(&super::install::find("haproxy")?, core);
        command.arg("-f").arg(&conf).arg("-db");
        let mut proc = Proc::spawn("haproxy", command, &log)?;
        proc.wait_listening(listen, &log)?;
        Ok(Haproxy { proc, addr: listen })
    }
}
