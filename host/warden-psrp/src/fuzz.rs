//! The body of the `psrp_parse` fuzz target (`tests/fuzz/fuzz_targets/psrp_parse.rs`), here so
//! it is built, linted and run over its seeds by `cargo test` like any other code.
//!
//! Its job: push arbitrary bytes through every parser of this crate and check what each
//! accepts survives a rebuild: SOAP answers and requests rebuilt by the matching builder parse
//! back to the same value, messages re-encode to the same message, reassembled messages
//! re-fragment to the same messages, CLIXML reserializes stably, and its JSON maps back
//! exactly. Panics (including failed invariants) are the findings.

use crate::clixml;
use crate::fragment::{Defragmenter, HEADER_LEN, fragment_message};
use crate::message::Message;
use crate::pipeline;
use crate::wsman::{self, RequestBody, Response};

/// Largest message the fuzzed reassembler accepts (inputs are small; this bounds memory).
const MAX_MESSAGE: usize = 1 << 20;

/// Runs `data` through every parser and checks the round-trip invariants.
pub fn psrp_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_response(&text);
    check_request(&text);
    check_fragments(data);
    check_message(data);
    check_clixml(&text);
    check_pipeline_bodies(&text);
}

fn check_response(text: &str) {
    let Ok((relates_to, response)) = wsman::parse_response(text) else {
        return;
    };
    let request = wsman::Header {
        message_id: relates_to.unwrap_or_default(),
        ..wsman::Header::new(
            "https://fuzz.invalid/wsman",
            "urn:fuzz",
            wsman::action::RECEIVE,
        )
    };
    let rebuilt = match &response {
        Response::Created { shell_id } => wsman::create_response(&request, *shell_id),
        Response::CommandCreated { command_id } => wsman::command_response(&request, *command_id),
        Response::Received { streams, state } => {
            wsman::receive_response(&request, streams, state.as_ref())
        }
        Response::Sent => wsman::send_response(&request),
        Response::Signaled => wsman::signal_response(&request),
        Response::Deleted => wsman::delete_response(&request),
        Response::Fault(f) => wsman::fault(relates_to, f),
    };
    let (_, again) = wsman::parse_response(&rebuilt)
        .unwrap_or_else(|e| panic!("rebuilt answer does not parse: {e}"));
    assert_eq!(again, response, "answer changed in a rebuild");

    // The streams of an answer feed the reassembler like a client would.
    if let Response::Received { streams, .. } = &response {
        let mut defrag = Defragmenter::new(MAX_MESSAGE);
        for s in streams {
            match defrag.push(&s.data) {
                Ok(messages) => messages.iter().for_each(|m| check_message(m)),
                Err(_) => break,
            }
        }
    }
}

fn check_request(text: &str) {
    let Ok(request) = wsman::parse_request(text) else {
        return;
    };
    let h = &request.header;
    let (rebuilt, expected) = match &request.body {
        RequestBody::Create {
            shell_id: Some(id),
            creation_fragments,
            ..
        } => (
            wsman::create_shell(h, *id, creation_fragments),
            RequestBody::Create {
                shell_id: Some(*id),
                input_streams: "stdin pr".into(),
                output_streams: "stdout".into(),
                creation_fragments: creation_fragments.clone(),
            },
        ),
        RequestBody::Command {
            command_id: Some(id),
            arguments,
            ..
        } => (
            wsman::command(h, *id, arguments),
            RequestBody::Command {
                command_id: Some(*id),
                command: String::new(),
                arguments: arguments.clone(),
            },
        ),
        RequestBody::Receive { command_id, .. } => (
            wsman::receive(h, *command_id),
            RequestBody::Receive {
                command_id: *command_id,
                stream: "stdout".into(),
            },
        ),
        RequestBody::Send { streams } if streams.len() == 1 => {
            let s = &streams[0];
            let mut chunk = s.clone();
            chunk.end = false;
            (
                wsman::send_stream(h, s.command_id, &s.name, &s.data),
                RequestBody::Send {
                    streams: vec![chunk],
                },
            )
        }
        RequestBody::Signal {
            command_id: Some(id),
            code,
        } => (
            wsman::signal(h, *id, code),
            RequestBody::Signal {
                command_id: Some(*id),
                code: code.clone(),
            },
        ),
        RequestBody::Delete => (wsman::delete(h), RequestBody::Delete),
        _ => return,
    };
    let again = wsman::parse_request(&rebuilt)
        .unwrap_or_else(|e| panic!("rebuilt request does not parse: {e}"));
    assert_eq!(&again.header, h, "request header changed in a rebuild");
    assert_eq!(again.body, expected, "request body changed in a rebuild");

    let payload = match &request.body {
        RequestBody::Create {
            creation_fragments, ..
        } => creation_fragments.as_slice(),
        RequestBody::Command { arguments, .. } => arguments.as_slice(),
        _ => return,
    };
    if let Ok(messages) = Defragmenter::new(MAX_MESSAGE).push(payload) {
        messages.iter().for_each(|m| check_message(m));
    }
}

fn check_fragments(data: &[u8]) {
    // Whatever the input, cutting it into fragments and reassembling gives it back.
    let limit = HEADER_LEN + 1 + usize::from(data.first().copied().unwrap_or(0) % 64);
    let object_id = u64::from(data.last().copied().unwrap_or(0));
    let fragments = fragment_message(object_id, data, limit);
    assert!(fragments.iter().all(|f| f.len() <= limit));
    let mut defrag = Defragmenter::new(MAX_MESSAGE);
    let out = defrag
        .push(&fragments.concat())
        .unwrap_or_else(|e| panic!("own fragments refused: {e}"));
    assert_eq!(out, vec![data.to_vec()]);
    assert!(!defrag.is_partial());

    // The input as a fragment stream: what it completes re-fragments to the same messages.
    let mut defrag = Defragmenter::new(MAX_MESSAGE);
    if let Ok(messages) = defrag.push(data) {
        let again: Vec<u8> = messages
            .iter()
            .enumerate()
            .flat_map(|(i, m)| fragment_message(i as u64, m, limit).concat())
            .collect();
        let back = Defragmenter::new(MAX_MESSAGE)
            .push(&again)
            .unwrap_or_else(|e| panic!("re-fragmented messages refused: {e}"));
        assert_eq!(back, messages);
        messages.iter().for_each(|m| check_message(m));
    }
}

fn check_message(bytes: &[u8]) {
    let Ok(m) = Message::decode(bytes) else {
        return;
    };
    assert_eq!(
        Message::decode(&m.encode()).as_ref(),
        Ok(&m),
        "message changed in a re-encode"
    );
    check_clixml(&m.data);
}

fn check_clixml(text: &str) {
    if let Ok(values) = clixml::deserialize_all(text) {
        for v in &values {
            check_value(v);
        }
    }
    let Ok(v) = clixml::deserialize(text) else {
        return;
    };
    check_value(&v);
}

fn check_value(v: &clixml::PsValue) {
    // Reserializing is stable (compared as text: a NaN is not equal to itself).
    let first = clixml::serialize(v);
    let back = clixml::deserialize(&first)
        .unwrap_or_else(|e| panic!("serialized value does not deserialize: {e}"));
    assert_eq!(
        clixml::serialize(&back),
        first,
        "value changed in a round trip"
    );
    // Its JSON maps back exactly.
    let json = clixml::to_json(v);
    let via = clixml::deserialize(&clixml::serialize(&clixml::from_json(&json)))
        .unwrap_or_else(|e| panic!("JSON of a value does not round-trip: {e}"));
    assert_eq!(clixml::to_json(&via), json, "JSON changed in a round trip");
}

fn check_pipeline_bodies(text: &str) {
    // No invariants beyond not panicking: these are views over clixml::deserialize, so only
    // CLIXML it accepts is worth their time.
    if clixml::deserialize(text).is_err() {
        return;
    }
    let _ = pipeline::parse_session_capability(text);
    let _ = pipeline::parse_init_runspace_pool(text);
    let _ = pipeline::parse_application_private_data(text);
    let _ = pipeline::parse_runspace_pool_state(text);
    let _ = pipeline::parse_pipeline_state(text);
    let _ = pipeline::parse_error_record(text);
    let _ = pipeline::parse_informational_record(text);
    if let Ok(commands) = pipeline::parse_create_pipeline(text) {
        // What a server accepts, a client rebuilding it would send the same way.
        let rebuilt = pipeline::create_pipeline(&commands);
        let again = pipeline::parse_create_pipeline(&rebuilt)
            .unwrap_or_else(|e| panic!("rebuilt CREATE_PIPELINE does not parse: {e}"));
        assert_eq!(again.len(), commands.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_pass() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fuzz/seeds/psrp_parse"
        );
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            psrp_parse(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n >= 6, "only {n} seeds in {dir}");
    }

    #[test]
    fn odd_inputs() {
        for input in [
            &b""[..],
            b"\xff\xfe\x00",
            b"<",
            b"<?xml version=\"1.0\"?>",
            &[0u8; 21],
            &[
                0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff,
            ],
        ] {
            psrp_parse(input);
        }
    }
}
