use super::*;
use proptest::prelude::*;
use serde_json::json;

const APP_PRIVATE_DATA: &str = r#"<Obj RefId="0"><MS><Obj N="ApplicationPrivateData" RefId="1"><TN RefId="0"><T>System.Management.Automation.PSPrimitiveDictionary</T><T>System.Collections.Hashtable</T><T>System.Object</T></TN><DCT><En><S N="Key">PSVersionTable</S><Obj N="Value" RefId="2"><TNRef RefId="0" /><DCT><En><S N="Key">PSVersion</S><Version N="Value">5.1.14393.2248</Version></En><En><S N="Key">PSCompatibleVersions</S><Obj N="Value" RefId="3"><TN RefId="1"><T>System.Version[]</T><T>System.Array</T><T>System.Object</T></TN><LST><Version>1.0</Version><Version>2.0</Version></LST></Obj></En></DCT></Obj></En></DCT></Obj></MS></Obj>"#;

#[test]
fn serializes_like_powershell() {
    let o = PsObject::with_extended(vec![
        ("protocolversion".into(), PsValue::Version("2.3".into())),
        ("Nothing".into(), PsValue::Null),
        (
            "Thread".into(),
            PsObject::enum_value("T.E", "Default", 0).into(),
        ),
        (
            "Again".into(),
            PsObject::enum_value("T.E", "Other", 1).into(),
        ),
    ]);
    assert_eq!(
        serialize(&o.into()),
        r#"<Obj RefId="0"><MS><Version N="protocolversion">2.3</Version><Nil N="Nothing" /><Obj N="Thread" RefId="1"><TN RefId="0"><T>T.E</T><T>System.Enum</T><T>System.ValueType</T><T>System.Object</T></TN><ToString>Default</ToString><I32>0</I32></Obj><Obj N="Again" RefId="2"><TNRef RefId="0" /><ToString>Other</ToString><I32>1</I32></Obj></MS></Obj>"#
    );
    assert_eq!(
        serialize_named("a<\"b\"\n", &PsValue::String("x & <y>\r\n_x".into())),
        r#"<S N="a&lt;&quot;b&quot;_x000A_">x &amp; &lt;y&gt;_x000D__x000A__x005F_x</S>"#
    );
    assert_eq!(serialize(&PsValue::Double(1.5)), "<Db>1.5</Db>");
    assert_eq!(serialize(&PsValue::Double(3.0)), "<Db>3</Db>");
    assert_eq!(serialize(&PsValue::Bytes(vec![1, 2, 3])), "<BA>AQID</BA>");
    assert_eq!(serialize(&PsValue::String(String::new())), "<S />");
}

#[test]
fn deserializes_refs_and_type_name_refs() {
    let v = deserialize(&format!(
        "\u{feff}<?xml version=\"1.0\"?>{APP_PRIVATE_DATA}"
    ))
    .unwrap();
    let data = v
        .as_object()
        .unwrap()
        .property("ApplicationPrivateData")
        .unwrap();
    let data = data.as_object().unwrap();
    assert_eq!(
        data.type_names[0],
        "System.Management.Automation.PSPrimitiveDictionary"
    );
    let (k, table) = &data.dict.as_ref().unwrap()[0];
    assert_eq!(k.as_str(), Some("PSVersionTable"));
    let table = table.as_object().unwrap();
    // TNRef resolved to the same list.
    assert_eq!(table.type_names, data.type_names);
    assert_eq!(
        to_json(&v),
        json!({"ApplicationPrivateData": {"PSVersionTable": {
            "PSVersion": "5.1.14393.2248", "PSCompatibleVersions": ["1.0", "2.0"]}}})
    );

    let with_ref = r#"<Obj RefId="0"><MS><Obj N="A" RefId="1"><S>boxed</S></Obj><Ref N="B" RefId="1" /></MS></Obj>"#;
    let v = deserialize(with_ref).unwrap();
    let o = v.as_object().unwrap();
    assert_eq!(o.property("b"), o.property("A"));
    assert_eq!(to_json(&v), json!({"A": "boxed", "B": "boxed"}));
}

#[test]
fn deserializes_objs_documents() {
    let doc = r#"#< CLIXML
<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04"><S S="Error">oops_x000D__x000A_</S><I32>7</I32></Objs>"#;
    let all = deserialize_all(doc).unwrap();
    assert_eq!(
        all,
        vec![PsValue::String("oops\r\n".into()), PsValue::I32(7)]
    );
    assert!(deserialize(doc.trim_start_matches("#< CLIXML\n")).is_err());
    let one = r#"<Objs xmlns="http://schemas.microsoft.com/powershell/2004/04"><B>true</B></Objs>"#;
    assert_eq!(deserialize(one).unwrap(), PsValue::Bool(true));
    assert_eq!(
        deserialize_all(&serialize_all(&[PsValue::I64(1), PsValue::Null])).unwrap(),
        vec![PsValue::I64(1), PsValue::Null]
    );
}

#[test]
fn primitives_round_trip() {
    let g = Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
    let values = vec![
        PsValue::Null,
        PsValue::Bool(false),
        PsValue::Byte(255),
        PsValue::I32(-5),
        PsValue::U32(7),
        PsValue::I64(i64::MIN),
        PsValue::U64(u64::MAX),
        PsValue::Double(-0.125),
        PsValue::Double(1e300),
        PsValue::Double(f64::INFINITY),
        PsValue::String("tab\tnul\0 ünï 😀 _X".into()),
        PsValue::Char(97),
        PsValue::DateTime("2024-01-02T03:04:05.1234567+00:00".into()),
        PsValue::TimeSpan("PT9.0269026S".into()),
        PsValue::Guid(g),
        PsValue::Bytes(vec![0, 255]),
        PsValue::Version("1.2.3.4".into()),
        PsValue::Uri("http://x/?a=1&b=_x".into()),
        PsValue::SecureString(vec![9, 9]),
        PsValue::Other {
            tag: "D".into(),
            text: "1.10".into(),
        },
    ];
    for v in values {
        let text = serialize(&v);
        assert_eq!(deserialize(&text).unwrap(), v, "{text}");
    }
    assert_eq!(
        serialize(&PsValue::Other {
            tag: "<bad>".into(),
            text: "t".into()
        }),
        "<S>t</S>"
    );
    assert!(deserialize("<Db>NaN</Db>").is_ok());
    assert_eq!(to_json(&PsValue::Double(f64::NAN)), json!("NaN"));
}

#[test]
fn escaping() {
    assert_eq!(
        escape_string("a\u{1}b_xc_Xd_e"),
        "a_x0001_b_x005F_xc_x005F_Xd_e"
    );
    assert_eq!(
        unescape_string("a_x0001_b_x005F_xc_x005f_Xd_e"),
        "a\u{1}b_xc_Xd_e"
    );
    assert_eq!(unescape_string("_xD83D__xDE00_"), "😀");
    assert_eq!(unescape_string("_xD83D_x"), "\u{fffd}x");
    assert_eq!(
        unescape_string("_x12_ _xZZZZ_ _x0041"),
        "_x12_ _xZZZZ_ _x0041"
    );
    assert_eq!(unescape_string(&escape_string("_x0041_")), "_x0041_");
}

#[test]
fn refusals() {
    let err = |t: &str| deserialize(t).unwrap_err();
    assert!(matches!(
        err(r#"<!DOCTYPE x [<!ENTITY e "x">]><S>&e;</S>"#),
        PsrpError::Xml(_)
    ));
    assert!(
        matches!(err(r#"<Obj RefId="0"><MS><Ref N="x" RefId="9" /></MS></Obj>"#), PsrpError::Clixml(m) if m.contains("unknown object"))
    );
    // A ref to the object being built is to one not yet seen: no cycles.
    assert!(deserialize(r#"<Obj RefId="0"><MS><Ref N="x" RefId="0" /></MS></Obj>"#).is_err());
    assert!(
        matches!(err(r#"<Obj RefId="0"><TNRef RefId="3" /></Obj>"#), PsrpError::Clixml(m) if m.contains("unknown list"))
    );
    assert!(err("<I32>x</I32>").to_string().contains("Int32"));
    assert!(deserialize("<Foo />").is_err());
    assert!(deserialize("<S>a</S><S>b</S>").is_err());
    assert!(deserialize("<Objs></Objs>").is_err());
    assert!(deserialize(r#"<Obj RefId="0"><MS><S>no name</S></MS></Obj>"#).is_err());
    assert!(deserialize("<S><S/></S>").is_err());

    let nest = |n: usize| {
        let mut s = String::new();
        for i in 0..n {
            s.push_str(&format!(r#"<Obj N="o" RefId="{i}"><MS>"#));
            s.push_str("<Nil N=\"x\" />");
        }
        s.push_str("<Nil N=\"leaf\" />");
        for _ in 0..n {
            s.push_str("</MS></Obj>");
        }
        s
    };
    assert!(deserialize(&nest(MAX_DEPTH)).is_ok());
    assert!(
        matches!(deserialize(&nest(MAX_DEPTH + 1)), Err(PsrpError::Clixml(m)) if m.contains("deeper"))
    );

    // Refs to refs: exponential expansion is cut off.
    let mut bomb = String::from(r#"<Obj RefId="0"><MS><Obj N="a" RefId="1"><S>x</S></Obj>"#);
    for i in 2..40 {
        bomb.push_str(&format!(
            r#"<Obj N="n{i}" RefId="{i}"><MS><Ref N="a" RefId="{p}" /><Ref N="b" RefId="{p}" /></MS></Obj>"#,
            p = i - 1
        ));
    }
    bomb.push_str("</MS></Obj>");
    assert!(matches!(deserialize(&bomb), Err(PsrpError::TooLarge(_))));
}

/// `<Obj RefId="0"><LST>` holding `<Obj RefId="1">` with `inner`, then `refs` `<Ref>`s to it.
fn refs_to(inner: &str, refs: usize) -> String {
    let mut doc = format!(r#"<Obj RefId="0"><LST><Obj RefId="1">{inner}</Obj>"#);
    doc.push_str(&r#"<Ref RefId="1" />"#.repeat(refs));
    doc.push_str("</LST></Obj>");
    doc
}

#[test]
fn ref_copies_are_counted_in_bytes() {
    let mib = 1 << 20;
    let big = format!("<S>{}</S>", "a".repeat(mib));
    // 1 MiB read, 1 MiB kept for the <Ref>s, 62 copies: 64 MiB, at MAX_EXPANDED_BYTES.
    let under = refs_to(&big, MAX_EXPANDED_BYTES / mib - 2);
    let v = deserialize(&under).unwrap();
    assert_eq!(v.as_object().unwrap().list.as_ref().unwrap().len(), 63);
    // Two more copies are over it.
    let over = refs_to(&big, MAX_EXPANDED_BYTES / mib);
    assert!(matches!(
        deserialize(&over),
        Err(PsrpError::TooLarge(m)) if m.contains("MAX_EXPANDED_BYTES")
    ));
    // The review's case: 80k refs to a 1 MiB string (~2.5 MB of input, 80 GiB expanded) is
    // refused at the 64th copy, before it is made.
    let started = std::time::Instant::now();
    assert!(matches!(
        deserialize(&refs_to(&big, 80_000)),
        Err(PsrpError::TooLarge(_))
    ));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // Byte arrays and names count too.
    let ba = format!("<BA>{}</BA>", B64.encode(vec![0u8; mib]));
    assert!(matches!(
        deserialize(&refs_to(&ba, MAX_EXPANDED_BYTES / mib)),
        Err(PsrpError::TooLarge(_))
    ));
    let named = format!(r#"<MS><Nil N="{}" /></MS>"#, "n".repeat(mib));
    assert!(matches!(
        deserialize(&refs_to(&named, MAX_EXPANDED_BYTES / mib)),
        Err(PsrpError::TooLarge(_))
    ));
}

#[test]
fn kept_copies_of_nested_referenced_objects_are_counted() {
    // `n` nested objects, each some <Ref> names (here from inside a <TN>, where it is never
    // read), around a 2 MiB string: each is kept whole, so the string is held `n` times.
    let doc = |n: usize| {
        let mut s = String::from(r#"<Obj RefId="r"><TN RefId="t">"#);
        for i in 0..n {
            s.push_str(&format!(r#"<Ref RefId="d{i}" />"#));
        }
        s.push_str("</TN><MS>");
        for i in 0..n {
            s.push_str(&format!(r#"<Obj N="o" RefId="d{i}"><MS>"#));
        }
        s.push_str(&format!(r#"<S N="s">{}</S>"#, "a".repeat(2 << 20)));
        s.push_str(&"</MS></Obj>".repeat(n));
        s.push_str("</MS></Obj>");
        s
    };
    // 2 MiB read + 30 kept copies of it: 62 MiB.
    assert!(deserialize(&doc(30)).is_ok());
    // 2 MiB + 32 copies: 66 MiB.
    assert!(matches!(
        deserialize(&doc(32)),
        Err(PsrpError::TooLarge(m)) if m.contains("MAX_EXPANDED_BYTES")
    ));
}

#[test]
fn type_name_lists_are_capped_and_their_copies_counted() {
    let tn = |n: usize| {
        let names: String = (0..n).map(|i| format!("<T>T{i}</T>")).collect();
        format!(r#"<TN RefId="0">{names}</TN>"#)
    };
    let one = |n: usize| format!(r#"<Obj RefId="0">{}</Obj>"#, tn(n));
    let v = deserialize(&one(MAX_TYPE_NAMES)).unwrap();
    assert_eq!(v.as_object().unwrap().type_names.len(), MAX_TYPE_NAMES);
    assert!(matches!(
        deserialize(&one(MAX_TYPE_NAMES + 1)),
        Err(PsrpError::TooLarge(m)) if m.contains("MAX_TYPE_NAMES")
    ));
    // Every <TNRef> copies the list: its names count as values.
    let copies = |n: usize| {
        let mut doc = format!(r#"<Obj RefId="0">{}<LST>"#, tn(MAX_TYPE_NAMES));
        for i in 1..=n {
            doc.push_str(&format!(r#"<Obj RefId="{i}"><TNRef RefId="0" /></Obj>"#));
        }
        doc.push_str("</LST></Obj>");
        doc
    };
    // The review's case: a list of 250k names, then 60k <TNRef>s to it, is refused at the
    // 65th name.
    let mut doc = format!(r#"<Obj RefId="0">{}<LST>"#, tn(250_000));
    doc.push_str(&r#"<Obj><TNRef RefId="0" /></Obj>"#.repeat(60_000));
    doc.push_str("</LST></Obj>");
    let started = std::time::Instant::now();
    assert!(matches!(deserialize(&doc), Err(PsrpError::TooLarge(_))));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // Each copy costs its object and 64 names: 65 values.
    let fits = MAX_VALUES / (MAX_TYPE_NAMES + 1) - 2;
    assert!(deserialize(&copies(fits)).is_ok());
    assert!(matches!(
        deserialize(&copies(fits + 4)),
        Err(PsrpError::TooLarge(m)) if m.contains("values")
    ));
}

#[test]
fn refs_keep_the_depth_limit() {
    // An object `n` deep, referenced from under `around` more objects.
    let doc = |n: usize, around: usize| {
        let mut deep = String::new();
        for i in 0..n {
            deep.push_str(&format!(r#"<Obj N="o" RefId="d{i}"><MS>"#));
        }
        deep.push_str(&"</MS></Obj>".repeat(n));
        let deep = deep.replacen(r#"N="o" RefId="d0""#, r#"N="deep" RefId="d0""#, 1);
        let mut s = format!(r#"<Obj RefId="r"><MS>{deep}"#);
        for i in 0..around {
            s.push_str(&format!(r#"<Obj N="w" RefId="w{i}"><MS>"#));
        }
        s.push_str(r#"<Ref N="copy" RefId="d0" />"#);
        s.push_str(&"</MS></Obj>".repeat(around));
        s.push_str("</MS></Obj>");
        s
    };
    // Root (1) + around + the copy's depth.
    assert!(deserialize(&doc(40, MAX_DEPTH - 41)).is_ok());
    assert!(
        matches!(deserialize(&doc(40, MAX_DEPTH - 40)), Err(PsrpError::Clixml(m)) if m.contains("deeper"))
    );
}

#[test]
fn json_mapping_examples() {
    let enum_obj: PsValue = PsObject::enum_value("X.Color", "Red", 2).into();
    assert_eq!(to_json(&enum_obj), json!("Red"));
    assert_eq!(from_json(&json!(5)), PsValue::I32(5));
    assert_eq!(
        from_json(&json!(5_000_000_000i64)),
        PsValue::I64(5_000_000_000)
    );
    assert_eq!(from_json(&json!(u64::MAX)), PsValue::U64(u64::MAX));
    assert_eq!(from_json(&json!(0.5)), PsValue::Double(0.5));
    assert_eq!(
        serialize(&from_json(&json!([1, "a"]))),
        r#"<Obj RefId="0"><TN RefId="0"><T>System.Object[]</T><T>System.Array</T><T>System.Object</T></TN><LST><I32>1</I32><S>a</S></LST></Obj>"#
    );
    assert_eq!(
        serialize(&from_json(&json!({"b": null, "a": true}))),
        // Members in the order the JSON gave them (parameter order is the caller's).
        r#"<Obj RefId="0"><MS><Nil N="b" /><B N="a">true</B></MS></Obj>"#
    );
    let adapted = PsObject {
        type_names: vec!["Some.Type".into()],
        to_string: Some("shown".into()),
        adapted: vec![("P".into(), PsValue::I32(1)), ("Q".into(), PsValue::I32(2))],
        extended: vec![("P".into(), PsValue::I32(0))],
        ..PsObject::default()
    };
    // Extended first; on a clash the extended value wins.
    assert_eq!(to_json(&adapted.into()), json!({"P": 0, "Q": 2}));
    let only_text = PsObject {
        to_string: Some("t".into()),
        ..PsObject::default()
    };
    assert_eq!(to_json(&only_text.into()), json!("t"));
    let dict = PsObject {
        dict: Some(vec![(PsValue::I32(1), PsValue::String("one".into()))]),
        ..PsObject::default()
    };
    assert_eq!(to_json(&dict.into()), json!({"1": "one"}));
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value as J;
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(J::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(J::from),
        any::<String>().prop_map(J::String),
        "[_xX0-9A-Fa-f\\x00-\\x1f<>&\"' ]{0,12}".prop_map(J::String),
        Just(J::String("_x0041_ _X005F_ _x".into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(J::Array),
            prop::collection::btree_map(
                prop_oneof![any::<String>(), "[_x0-9A-F\\n\\t]{0,8}".prop_map(|s| s)],
                inner,
                0..6
            )
            .prop_map(|m| J::Object(m.into_iter().collect())),
        ]
    })
}

/// Serializes `s` as a named string and as an object's ToString and type name, and compares
/// the writer's output with `escape_string` followed by the full XML escaping.
fn check_plain_text_shortcut(s: &str, name: &str) -> std::result::Result<(), String> {
    let mut escaped = String::new();
    xml::escape_text(&escape_string(s), &mut escaped);
    let mut attr = String::new();
    escape_attr(&escape_string(name), &mut attr);
    let named = serialize_named(name, &PsValue::String(s.to_owned()));
    let expected = if s.is_empty() {
        format!("<S N=\"{attr}\" />")
    } else {
        format!("<S N=\"{attr}\">{escaped}</S>")
    };
    if named != expected {
        return Err(format!(
            "{s:?} named {name:?}: wrote {named}, expected {expected}"
        ));
    }
    let o = PsObject {
        type_names: vec![name.to_owned()],
        to_string: Some(s.to_owned()),
        ..PsObject::default()
    };
    let mut type_name = String::new();
    xml::escape_text(&escape_string(name), &mut type_name);
    let type_leaf = if name.is_empty() {
        "<T />".to_owned()
    } else {
        format!("<T>{type_name}</T>")
    };
    let object = serialize(&o.into());
    let expected = format!(
        "<Obj RefId=\"0\"><TN RefId=\"0\">{type_leaf}</TN><ToString>{escaped}</ToString></Obj>"
    );
    if object != expected {
        return Err(format!(
            "{s:?} named {name:?}: wrote {object}, expected {expected}"
        ));
    }
    Ok(())
}

/// The inputs at the edges of the writer's plain-text shortcut, which the generator above
/// reaches only by chance: `_` before `x`/`X`, the controls that `escape_string` encodes,
/// the non-characters, non-BMP text and everything XML escapes.
#[test]
fn plain_text_shortcut_edge_cases() {
    const EDGES: [&str; 15] = [
        "", "_", "_x", "_X", "_x0041_", "a_xb", "\r", "\n", "\t", "\u{7f}", "\u{85}", "\u{fffe}",
        "😀", "]]>", "\"'<>&",
    ];
    for s in EDGES {
        for name in EDGES {
            check_plain_text_shortcut(s, name).unwrap();
        }
    }
    // And against fixed text, not only the escaping functions: a peer must not read
    // `_x0041_` as `A`, nor lose a control character.
    assert_eq!(
        serialize_named("_x0041_", &PsValue::String("_X\t\u{85}".into())),
        r#"<S N="_x005F_x0041_">_x005F_X_x0009__x0085_</S>"#
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn json_identity(j in arb_json()) {
        let text = serialize(&from_json(&j));
        let back = deserialize(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        prop_assert_eq!(to_json(&back), j);
    }

    /// The writer's shortcut for plain text writes what the full escaping writes.
    #[test]
    fn plain_text_shortcut_writes_the_escaped_form(
        s in "(_[xX]|[a-zA-Z0-9 ._<>&\"'xX\\-]|\\PC|[\x00-\x1f\x7f-\u{9f}])*",
        name in "(_[xX]|[a-zA-Z0-9 _<>&\"xX]|\\PC|[\x00-\x1f])*",
    ) {
        if let Err(failed) = check_plain_text_shortcut(&s, &name) {
            prop_assert!(false, "{}", failed);
        }
    }

    #[test]
    fn escape_round_trip(s in any::<String>()) {
        prop_assert_eq!(unescape_string(&escape_string(&s)), s);
    }

    #[test]
    fn deserialize_never_panics(s in "(<|>|/|Obj|MS|S|N=\"a\"|RefId=\"[0-3]\"|Ref|TN|TNRef|T|LST|DCT|En|Key|Value|I32|[0-9]| |_x0041_)*") {
        if let Ok(v) = deserialize(&s) {
            let again = serialize(&v);
            prop_assert_eq!(serialize(&deserialize(&again).unwrap()), again);
        }
    }
}
