//! Runs the small-call fixture that the `codec` bench and the `small_call` example (counted by
//! `bench/callgrind/rps.sh`) share, once per side: `cargo test` builds neither the bench nor
//! runs the example, so without this the fixture's own checks (a CommandCreated, a done
//! Command, ten objects, Completed) could rot unnoticed.

#[path = "../benches/call/mod.rs"]
mod call;

use serde_json::json;

#[test]
fn small_call_fixture_runs_on_both_sides() {
    let fixture = call::Fixture::new();
    let objects = fixture.client();
    assert_eq!(objects.len(), 10);
    for (i, object) in objects.iter().enumerate() {
        assert_eq!(object["Identity"], json!(format!("user{i}")));
        assert_eq!(
            object["DisplayName"],
            json!(format!("User {i} <Contoso & Partners>"))
        );
        assert_eq!(object["EmailAddresses"].as_array().map(Vec::len), Some(2));
        assert_eq!(object["AuditEnabled"], json!(true));
    }
    // The server side answers the same way every time (the client parsed these answers).
    let (command_response, receive_response) = fixture.server();
    assert!(command_response.contains("CommandResponse"));
    assert_eq!(receive_response.len(), fixture.receive_response_len());
}
