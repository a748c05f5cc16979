//! `sockets`: a test guest that reaches for the network. `run(["<host:port>"])` tries
//! `std::net::TcpStream::connect` (default `127.0.0.1:9`) and returns what happened as
//! `{"connect": "ok: …" | "error: …"}`.
//!
//! Because it uses `std::net`, the component imports `wasi:sockets`. The host is expected to
//! refuse to load it at all (plugins get no network); running it is only for hosts that do
//! not, to show the attempt failing.

use warden_sdk::Plugin;

warden_sdk::manifest! {
    name = "sockets",
    description = "Test guest that tries to open a TCP connection",
    cmdlets = {},
}

struct Sockets;

warden_sdk::plugin!(Sockets);

impl Plugin for Sockets {
    fn run(args: Vec<String>) -> Result<String, String> {
        let target = args.first().map_or("127.0.0.1:9", String::as_str);
        let outcome = match std::net::TcpStream::connect(target) {
            Ok(stream) => format!("ok: connected to {:?}", stream.peer_addr()),
            Err(e) => format!("error: {e}"),
        };
        Ok(warden_sdk::serde_json::json!({ "connect": outcome }).to_string())
    }
}
