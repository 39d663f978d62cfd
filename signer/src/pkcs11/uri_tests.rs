use super::*;

const Q: &str = "?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin";

fn parse(uri: &str) -> Result<Pkcs11Uri, String> {
    Pkcs11Uri::parse(uri)
}

fn refused(uri: &str, expected: &str) {
    match parse(uri) {
        Ok(parsed) => panic!("{uri:?} was accepted: {parsed:?}"),
        Err(err) => assert!(
            err.contains(expected),
            "{uri:?}: {err:?} lacks {expected:?}"
        ),
    }
}

#[test]
fn parses_the_documented_form() {
    let uri = parse(
        "pkcs11:token=agent%20hsm;object=kakunin;id=%01%02%ff;slot-id=7;serial=abc;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;type=private\
         ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin",
    )
    .unwrap();
    assert_eq!(uri.token.as_deref(), Some("agent hsm"));
    assert_eq!(uri.object.as_deref(), Some("kakunin"));
    assert_eq!(uri.id.as_deref(), Some(&[1u8, 2, 0xff][..]));
    assert_eq!(uri.slot_id, Some(7));
    assert_eq!(uri.serial.as_deref(), Some("abc"));
    assert_eq!(uri.manufacturer.as_deref(), Some("SoftHSM project"));
    assert_eq!(uri.model.as_deref(), Some("SoftHSM v2"));
    assert_eq!(
        uri.module,
        Some(Module::Path("/usr/lib/softhsm/libsofthsm2.so".into()))
    );
    assert!(
        matches!(uri.pin, Some(PinSource::File(ref p)) if p == std::path::Path::new("/run/pin"))
    );
}

#[test]
fn pin_sources_and_values() {
    for (source, path) in [
        ("file:/run/pin", "/run/pin"),
        ("file:///run/pin", "/run/pin"),
        ("/run/pin", "/run/pin"),
        ("pins/agent", "pins/agent"),
        ("file:/dir%20with%20space/pin", "/dir with space/pin"),
    ] {
        let uri = parse(&format!(
            "pkcs11:object=k?module-path=/m.so&pin-source={source}"
        ))
        .unwrap();
        assert!(
            matches!(uri.pin, Some(PinSource::File(ref p)) if p == std::path::Path::new(path)),
            "{source}"
        );
    }
    let uri = parse("pkcs11:object=k?module-path=/m.so&pin-value=12%2634").unwrap();
    assert!(matches!(uri.pin, Some(PinSource::Value(_))));
    let uri = parse("pkcs11:object=k?pin-value=1&module-name=softhsm2").unwrap();
    assert_eq!(uri.module, Some(Module::Name("softhsm2".into())));
}

#[test]
fn an_empty_path_matches_anything_and_is_accepted() {
    let uri = parse(&format!("pkcs11:{Q}")).unwrap();
    assert!(uri.token.is_none() && uri.object.is_none() && uri.id.is_none());
}

#[test]
fn refuses_what_it_does_not_understand() {
    refused(
        &format!("pkcs11:token=a;color=red{Q}"),
        "unsupported path attribute \"color\"",
    );
    refused(
        &format!("pkcs11:library-description=x{Q}"),
        "unsupported path attribute",
    );
    refused(
        &format!("pkcs11:object=a{Q}&x-vendor=1"),
        "unsupported query attribute",
    );
    refused(&format!("pkcs11:type=cert{Q}"), "cannot sign");
    refused(&format!("pkcs11:type=public{Q}"), "cannot sign");
    refused(&format!("pkcs11:type=weird{Q}"), "unknown type");
    refused(&format!("pkcs11:Token=a{Q}"), "unsupported path attribute");
    refused(
        &format!("pkcs11:pin-value=1234;object=a{Q}"),
        "belongs in the query",
    );
    refused(
        "pkcs11:object=a?token=t&module-path=/m.so&pin-value=1",
        "belongs in the path",
    );
}

#[test]
fn refuses_incomplete_or_ambiguous_uris() {
    refused("pkcs11:object=a?pin-source=/p", "no module");
    refused("pkcs11:object=a?module-path=/m.so", "no PIN");
    refused("pkcs11:object=a", "no module");
    refused(
        "pkcs11:object=a?module-path=m.so&pin-source=/p",
        "absolute path",
    );
    refused(
        "pkcs11:object=a?module-name=../m&pin-source=/p",
        "is a name",
    );
    refused(
        "pkcs11:object=a?module-path=/m.so&module-name=m&pin-source=/p",
        "not both",
    );
    refused(
        "pkcs11:object=a?module-path=/m.so&pin-source=/p&pin-value=1",
        "not both",
    );
    refused(&format!("pkcs11:object=a;object=b{Q}"), "given twice");
    refused(&format!("pkcs11:object=a;;id=%01{Q}"), "empty attribute");
    refused(&format!("pkcs11:object=a;{Q}"), "empty attribute");
    refused(&format!("pkcs11:object={Q}"), "empty value");
    refused(&format!("pkcs11:object{Q}"), "no '=value'");
    refused(&format!("pkcs11:slot-id=x1{Q}"), "not a decimal");
    refused(&format!("pkcs11:slot-id=-1{Q}"), "not a decimal");
    refused(
        &format!("pkcs11:token={}{Q}", "t".repeat(33)),
        "longer than 32 bytes",
    );
    refused(
        "pkcs11:object=a?module-path=/m.so&pin-source=env:PIN",
        "not supported",
    );
    refused(
        "pkcs11:object=a?module-path=/m.so&pin-source=%7Ccat%20/p",
        "command",
    );
    refused(
        "pkcs11:object=a?module-path=/m.so&pin-source=file:pin",
        "absolute path",
    );
    refused("object=a", "starts with");
    refused("PKCS11:object=a", "starts with");
}

#[test]
fn hostile_input_is_an_error_never_a_panic() {
    for uri in [
        "pkcs11:",
        "pkcs11:%",
        "pkcs11:id=%",
        "pkcs11:id=%4",
        "pkcs11:id=%G1",
        "pkcs11:id=%+1",
        "pkcs11:id=%-1",
        "pkcs11:id=%é1",
        "pkcs11:object=%ff%fe",
        "pkcs11:object=a\nb",
        "pkcs11:object=a#frag",
        "pkcs11:=",
        "pkcs11:=x",
        "pkcs11:;",
        "pkcs11:?",
        "pkcs11:?&",
        "pkcs11:??",
        "pkcs11:object=é?module-path=/é&pin-source=/é",
        "pkcs11:object=a?module-path=/m%00.so&pin-source=/p",
        "pkcs11:object=a?module-path=/m.so&pin-source=/p%00",
        "pkcs11:object=a?module-path=%ff&pin-source=/p",
        "pkcs11:token=\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}",
    ] {
        // Only that it returns; some of these are fine.
        let _ = parse(uri);
    }
    refused(&format!("pkcs11:id=%4{Q}"), "two hex digits");
    refused(&format!("pkcs11:id=%+1{Q}"), "two hex digits");
    refused(&format!("pkcs11:id=%é1{Q}"), "two hex digits");
    refused(&format!("pkcs11:object=%ff%fe{Q}"), "not UTF-8");
    refused(&format!("pkcs11:object=a\nb{Q}"), "not allowed");
    refused(&format!("pkcs11:object=a#b{Q}"), "not allowed");
    refused("pkcs11:object=a?module-path=/m%00.so&pin-source=/p", "NUL");
    let long = format!("pkcs11:object={}{Q}", "a".repeat(MAX_URI_LEN));
    refused(&long, "longer than");
    let many = format!("pkcs11:{}{Q}", "x=1;".repeat(1000));
    refused(&many, "unsupported path attribute");
}

#[test]
fn describe_is_canonical_and_never_shows_the_query() {
    let uri =
        parse("pkcs11:object=my%20key;token=tok;id=%01%AB?module-path=/m.so&pin-value=secret")
            .unwrap();
    let described = uri.describe();
    assert_eq!(described, "pkcs11:token=tok;object=my%20key;id=%01%AB");
    assert!(!described.contains("secret"));
    assert!(!format!("{uri:?}").contains("secret"));
    // What describe() prints parses back to the same key attributes.
    let again = parse(&format!("{described}{Q}")).unwrap();
    assert_eq!(again.describe(), described);
}

#[test]
fn redact_hides_the_query_and_misplaced_pins() {
    assert_eq!(
        redact("pkcs11:token=a?module-path=/m&pin-value=1234"),
        "pkcs11:token=a"
    );
    assert_eq!(
        redact("pkcs11:pin-value=1234;token=a"),
        "pkcs11:pin-value=(hidden);token=a"
    );
}

#[test]
fn percent_coding_round_trips_every_byte() {
    let all: Vec<u8> = (0..=255).collect();
    for everything in [false, true] {
        let encoded = percent_encode(&all, everything);
        assert_eq!(percent_decode("id", &encoded).unwrap(), all);
    }
    assert_eq!(percent_encode(b"a b~", false), "a%20b~");
}
