//! nginx (Debian's package) as the TLS-originating proxy: `proxy_pass
//! https://` to an upstream block with keep-alive, the agent's certificate
//! and key presented, the upstream verified against the agents' CA with
//! SNI, one worker process, access log to a file (one line per request, as
//! Kakunin's audit log).

use std::net::SocketAddr;
use std::path::Path;

use super::child::{self, Proc};
use super::paths::Files;

pub struct Nginx {
    pub proc: Proc,
    pub addr: SocketAddr,
}

/// The configuration, with everything under `dir`.
fn config(
    files: &Files,
    dir: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    pool: usize,
) -> String {
    let d = dir.display();
    // As root the master would switch its worker to `nobody`, which could
    // not read the temporary directory; the worker stays root instead.
    let user = if is_root() { "user root;\n" } else { "" };
    format!(
        r#"{user}worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # nginx closes a connection after 1000 requests by default (both
    # sides); Kakunin and HAProxy have no such cap, so it is lifted here.
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream exchange {{
        server {upstream};
        keepalive {pool};
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass https://exchange;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_ssl_certificate {agent_cert};
            proxy_ssl_certificate_key {agent_key};
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 2;
            proxy_ssl_server_name on;
            proxy_ssl_name {host};
            proxy_ssl_session_reuse on;
        }}
    }}
}}
"#,
        agent_cert = files.agent_cert.display(),
        agent_key = files.agent_key.display(),
        ca = files.ca.display(),
        host = super::paths::HOST,
    )
}

pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl Nginx {
    pub fn start(
        files: &Files,
        dir: &Path,
        upstream: SocketAddr,
        pool: usize,
        core: Option<usize>,
    ) -> anyhow::Result<Nginx> {
        std::fs::create_dir_all(dir)?;
        let listen = child::free_port()?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(files, dir, listen, upstream, pool))?;
        let log = dir.join("stderr.log");
        let mut command = child::command(&super::install::find("nginx")?, core);
        command
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-g")
            .arg("daemon off;");
        let mut proc = Proc::spawn("nginx", command, &log)?;
        proc.wait_listening(listen, &log)?;
        Ok(Nginx { proc, addr: listen })
    }
}
