//! The codec work of N small Remote PowerShell calls on one side, for callgrind
//! (`bash bench/callgrind/rps.sh`): `small_call client|server N`. Only `measured` is counted.

#[path = "../benches/call/mod.rs"]
mod call;

#[inline(never)]
fn measured(fixture: &call::Fixture, side: &str, n: usize) -> usize {
    let mut sink = 0;
    for _ in 0..n {
        sink += match side {
            "client" => std::hint::black_box(fixture.client()).len(),
            "server" => std::hint::black_box(fixture.server()).1.len(),
            other => panic!("side {other}: client or server"),
        };
    }
    sink
}

fn main() {
    let mut args = std::env::args().skip(1);
    let side = args.next().unwrap_or_else(|| "client".into());
    let n: usize = args.next().map_or(1000, |n| n.parse().expect("a count"));
    let fixture = call::Fixture::new();
    // One call outside the count: first-use costs.
    measured(&fixture, &side, 1);
    let answered = measured(&fixture, &side, n);
    println!(
        "{answered} ({} bytes per ReceiveResponse)",
        fixture.receive_response_len()
    );
}
