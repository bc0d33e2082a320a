//! The container health probe (the runtime image has no shell, curl or wget):
//! `healthcheck [PORT] [PATH]` sends `GET PATH` to 127.0.0.1 and exits 0 on a 2xx answer, 1
//! otherwise. The port is the service's ops port: `CRM_SYNC__HTTP__OPS_PORT` when set (ingest
//! and admin-api), else `CRM_SYNC__HTTP__PORT` when set (the consumers serve only the ops
//! endpoints), so a reconfigured port needs no new health check; else PORT. PATH defaults to
//! `/readyz`.
//!
//! Standard library only: built with plain `rustc` in the image's build stage.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let port_arg = args.next();
    let path = args.next().unwrap_or_else(|| "/readyz".to_owned());
    let from_env = |name: &str| std::env::var(name).ok().filter(|p| !p.is_empty());
    let port = from_env("CRM_SYNC__HTTP__OPS_PORT")
        .or_else(|| from_env("CRM_SYNC__HTTP__PORT"))
        .or(port_arg)
        .and_then(|p| p.parse::<u16>().ok());
    let Some(port) = port else {
        eprintln!("healthcheck: no port: pass one or set CRM_SYNC__HTTP__PORT");
        return ExitCode::from(2);
    };
    match status(port, &path) {
        Ok(code) if (200..300).contains(&code) => ExitCode::SUCCESS,
        Ok(code) => {
            eprintln!("healthcheck: GET {path} on port {port} answered {code}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("healthcheck: GET {path} on port {port}: {error}");
            ExitCode::FAILURE
        }
    }
}

fn status(port: u16, path: &str) -> std::io::Result<u16> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: crm-sync-healthcheck\r\nConnection: close\r\n\r\n"
    )?;
    // Only the status line matters: "HTTP/1.1 200 OK".
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "not an HTTP answer: {:?}",
                    line.lines().next().unwrap_or("")
                ),
            )
        })
}
