//! Round trips and refusals on components built here: a component (not only a core module),
//! with a nested core module, a component-level section and a custom section.

use super::*;

/// A valid component: a nested empty core module (section 1), a core instance of it
/// (section 2), and a custom section.
fn component() -> Vec<u8> {
    let mut c = vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
    let module = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    c.push(1);
    c.push(module.len() as u8);
    c.extend_from_slice(&module);
    // core instance section: 1 instance, instantiate module 0 with no args.
    c.extend_from_slice(&[2, 4, 1, 0x00, 0x00, 0x00]);
    c.extend_from_slice(&custom("note", b"hello"));
    c
}

fn custom(name: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = vec![0];
    leb(&mut out, body.len() as u32);
    out.extend_from_slice(&body);
    out
}

fn leb(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn valid_component(bytes: &[u8]) {
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(bytes)
        .expect("a valid component");
}

#[test]
fn a_signed_component_round_trips_and_stays_a_valid_component() {
    let original = component();
    valid_component(&original);
    let key = SecretKey::generate();
    let signed = key.sign(&original).unwrap();
    valid_component(&signed);
    assert_eq!(&signed[..8], &original[..8], "still a component header");
    let public = key.public_key();
    assert_eq!(
        verify(&signed, None, std::slice::from_ref(&public)).unwrap(),
        Verdict::Verified(vec![public.key_id().clone()])
    );
    assert_eq!(
        signers(&signed, None).unwrap(),
        Some(vec![public.key_id().clone()])
    );
    // Signing again replaces the signature: still one section, still verifies.
    let again = key.sign(&signed).unwrap();
    assert_eq!(again.len(), signed.len());
    assert!(matches!(
        verify(&again, None, &[public]).unwrap(),
        Verdict::Verified(_)
    ));
}

#[test]
fn a_detached_signature_verifies_the_unchanged_component() {
    let original = component();
    let key = SecretKey::generate();
    let signature = key.sign_detached(&original).unwrap();
    let public = key.public_key();
    assert_eq!(
        verify(&original, Some(&signature), std::slice::from_ref(&public)).unwrap(),
        Verdict::Verified(vec![public.key_id().clone()])
    );
    let mut changed = original.clone();
    changed.extend_from_slice(&custom("extra", b"!"));
    assert_eq!(
        verify(&changed, Some(&signature), std::slice::from_ref(&public)).unwrap(),
        Verdict::Tampered(public.key_id().clone())
    );
    let signed = key.sign(&original).unwrap();
    assert_eq!(
        verify(&signed, Some(&signature), &[public]),
        Err(SignatureError::EmbeddedAndDetached)
    );
}

#[test]
fn unsigned_other_key_and_tampered_are_told_apart() {
    let original = component();
    let ours = SecretKey::generate();
    let theirs = SecretKey::generate();
    let keys = [ours.public_key()];
    assert_eq!(verify(&original, None, &keys).unwrap(), Verdict::Unsigned);
    let by_them = theirs.sign(&original).unwrap();
    assert_eq!(
        verify(&by_them, None, &keys).unwrap(),
        Verdict::OtherKey(vec![theirs.public_key().key_id().clone()])
    );
    let mut tampered = ours.sign(&original).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        verify(&tampered, None, &keys).unwrap(),
        Verdict::Tampered(keys[0].key_id().clone())
    );
}

#[test]
fn hostile_layouts_are_refused_before_hashing() {
    let key = SecretKey::generate();
    let keys = [key.public_key()];
    let signed = key.sign(&component()).unwrap();
    // A second signature section (a copy of the first, appended).
    let mut two = signed.clone();
    let sig_section_len = signed.len() - component().len() + 8;
    two.extend_from_slice(&signed[8..sig_section_len]);
    assert_eq!(
        verify(&two, None, &keys),
        Err(SignatureError::SeveralSignatureSections { count: 2 })
    );
    assert_eq!(
        key.sign(&two),
        Err(SignatureError::SeveralSignatureSections { count: 2 })
    );
    // A signature that is not first.
    let mut late = component();
    late.extend_from_slice(&signed[8..sig_section_len]);
    assert_eq!(
        verify(&late, None, &keys),
        Err(SignatureError::SignatureNotFirst)
    );
    // A split signature: covers the part before the delimiter only.
    let mut partial = signed.clone();
    partial.extend_from_slice(&custom(DELIMITER_SECTION, &[0; 16]));
    partial.extend_from_slice(&custom("added-later", b"x"));
    assert_eq!(
        verify(&partial, None, &keys),
        Err(SignatureError::PartialSignature)
    );
    // A huge signature section: refused by size, never decoded.
    let mut huge = component()[..8].to_vec();
    huge.extend_from_slice(&custom_big(SIGNATURE_SECTION, MAX_SIGNATURE_BYTES + 1));
    huge.extend_from_slice(&component()[8..]);
    assert!(matches!(
        verify(&huge, None, &keys),
        Err(SignatureError::TooLarge { .. })
    ));
    // A section claiming 4 GiB: refused by its length, nothing allocated for it.
    let mut lying = component();
    lying.extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff, 0x0f, 9]);
    assert!(matches!(
        verify(&lying, None, &keys),
        Err(SignatureError::Malformed(_))
    ));
    // A detached signature larger than the bound.
    let big = vec![0u8; MAX_SIGNATURE_BYTES + 1];
    assert!(matches!(
        verify(&component(), Some(&big), &keys),
        Err(SignatureError::TooLarge { .. })
    ));
    assert!(matches!(
        verify(b"not wasm", None, &keys),
        Err(SignatureError::Malformed(_))
    ));
}

fn custom_big(name: &str, payload_len: usize) -> Vec<u8> {
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name.as_bytes());
    body.resize(body.len() + payload_len, 0);
    let mut out = vec![0];
    leb(&mut out, body.len() as u32);
    out.extend_from_slice(&body);
    out
}

#[test]
fn keys_round_trip_and_secrets_stay_out_of_debug() {
    let key = SecretKey::generate();
    let again = SecretKey::parse(&key.to_pem()).unwrap();
    assert_eq!(again.public_key(), key.public_key());
    let public = PublicKey::parse(&key.public_key().to_pem()).unwrap();
    assert_eq!(&public, &key.public_key());
    // The base64 line alone.
    let pem = public.to_pem();
    let line: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert_eq!(PublicKey::parse(&line).unwrap(), public);
    assert_eq!(public.key_id().as_str().len(), 24);
    let debug = format!("{key:?}");
    let secret_body: String = key
        .to_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!debug.contains(&secret_body), "{debug}");
    assert!(PublicKey::parse("not a key").is_err());
    assert!(SecretKey::parse(&public.to_pem()).is_err());
    assert!(KeyId::parse("00112233445566778899aabb").is_ok());
    assert!(KeyId::parse("0011").is_err());
}

#[test]
fn every_key_that_verifies_is_reported_not_only_the_first() {
    let old = SecretKey::generate();
    let new = SecretKey::generate();
    let both = new.add_signature(&old.sign(&component()).unwrap()).unwrap();
    valid_component(&both);
    let mut expected = vec![
        old.public_key().key_id().clone(),
        new.public_key().key_id().clone(),
    ];
    expected.sort();
    // Whatever order the keys are given in, both are named.
    for keys in [
        [old.public_key(), new.public_key()],
        [new.public_key(), old.public_key()],
    ] {
        assert_eq!(
            verify(&both, None, &keys).unwrap(),
            Verdict::Verified(expected.clone())
        );
    }
    assert_eq!(
        verify(&both, None, &[new.public_key()]).unwrap(),
        Verdict::Verified(vec![new.public_key().key_id().clone()])
    );
}

/// A detached signature payload: version, content type, hash function, then `rest`.
fn payload(rest: &[u8]) -> Vec<u8> {
    let mut p = vec![1, 1, 1];
    p.extend_from_slice(rest);
    p
}

fn with_len(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    leb(&mut out, body.len() as u32);
    out.extend_from_slice(body);
    out
}

#[test]
fn lengths_inside_a_signature_claiming_gigabytes_are_refused_before_decoding() {
    // wasmsign2 0.2.8 allocates each length-prefixed field at its claimed size before reading
    // it; each of these few-byte payloads claims 4 GiB at one level. Refused by our walk
    // (its message), never handed to wasmsign2.
    const HUGE: [u8; 5] = [0xff, 0xff, 0xff, 0xff, 0x0f];
    let key = SecretKey::generate();
    let keys = [key.public_key()];
    let signature_claiming = |inner: &[u8]| {
        // one hash set holding no hash and one signature whose body is `inner`
        let mut set = vec![0, 1];
        set.extend_from_slice(inner);
        let mut rest = vec![1];
        rest.extend_from_slice(&with_len(&set));
        payload(&rest)
    };
    let mut key_id_claiming = HUGE.to_vec();
    key_id_claiming.push(0);
    let mut signature_bytes_claiming = vec![0, 0x01];
    signature_bytes_claiming.extend_from_slice(&HUGE);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a hash set", payload(&[&[1][..], &HUGE[..]].concat())),
        ("a signature", signature_claiming(&HUGE)),
        ("a key id", signature_claiming(&with_len(&key_id_claiming))),
        (
            "the signature bytes",
            signature_claiming(&with_len(&signature_bytes_claiming)),
        ),
    ];
    for (what, detached) in cases {
        assert!(detached.len() < 32, "{what}: a tiny payload");
        match verify(&component(), Some(&detached), &keys) {
            Err(SignatureError::Undecodable(reason)) => assert!(
                reason.contains("longer than the signature"),
                "{what}: refused by the bounded walk, not wasmsign2: {reason}"
            ),
            other => panic!("{what}: {other:?}"),
        }
        let mut embedded = component()[..8].to_vec();
        embedded.extend_from_slice(&custom(SIGNATURE_SECTION, &detached));
        embedded.extend_from_slice(&component()[8..]);
        assert!(
            matches!(
                signers(&embedded, None),
                Err(SignatureError::Undecodable(reason)) if reason.contains("longer than the signature")
            ),
            "{what}: embedded"
        );
    }
    // Counts past the caps.
    let many_sets = payload(&[0xa0, 0x8d, 0x06]);
    assert!(matches!(
        verify(&component(), Some(&many_sets), &keys),
        Err(SignatureError::Undecodable(reason)) if reason.contains("at most")
    ));
}
