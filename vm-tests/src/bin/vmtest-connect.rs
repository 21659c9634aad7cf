//! Connects a socket and reports the outcome, for the network VM tests:
//! `vmtest-connect tcp|udp IP:PORT` or `vmtest-connect unix PATH`. Prints `connected` and
//! exits 0, or prints the error (with its errno) and exits 1. A policy with `Sigkill` makes it
//! die of SIGKILL instead (exit 137 in a shell).
use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    os::unix::net::UnixStream,
    time::Duration,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(proto), Some(target)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: vmtest-connect tcp|udp IP:PORT | unix PATH");
        std::process::exit(2);
    };
    let result = match proto.as_str() {
        "unix" => UnixStream::connect(target).map(|_| ()),
        "tcp" | "udp" => {
            let addr: SocketAddr = match target.parse() {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("bad address {target}: {e}");
                    std::process::exit(2);
                }
            };
            if proto == "tcp" {
                TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map(|_| ())
            } else {
                let local = if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                UdpSocket::bind(local).and_then(|s| s.connect(addr))
            }
        }
        other => {
            eprintln!("unknown protocol {other}");
            std::process::exit(2);
        }
    };
    match result {
        Ok(()) => println!("connected"),
        Err(e) => {
            println!("error: {e} (errno {})", e.raw_os_error().unwrap_or(0));
            std::process::exit(1);
        }
    }
}
