//! Verifications per second per core: `Verifier::verify` on distinct signed
//! requests (unique nonces, so the replay cache records each one), with
//! revocation off and with a stapled OCSP response (verified too), on one
//! thread and on several sharing one `Verifier`. Then the parts alone
//! (chain, staple, RFC 9421 signature) to see where the time goes.
//!
//! The clock handed to `verify` is fixed (one second after signing), so a
//! request signed early in the set is as fresh as one signed late. Each run
//! gets a new `Verifier` (an empty replay cache), so the same set of
//! requests serves every run and each request is verified once per run.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use base64::Engine as _;
use kakunin_verifier::httpsig::{self, Message, SigAlg, TargetUri};
use kakunin_verifier::{Outcome, Request, RevocationMode, Verifier, VerifierConfig};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde_json::json;

use crate::agents::{self, Agent, KeyKind, Lab, Signed, AUTHORITY, BODY, METHOD, PATH};

pub struct Settings {
    /// Length of one timed run.
    pub seconds: f64,
    /// Threads for the shared-verifier runs.
    pub threads: usize,
    /// Runs per measurement (median, min, max reported).
    pub runs: usize,
    pub keys: Vec<KeyKind>,
}

/// Requests verified between two looks at the clock / the shared counter.
const BATCH: usize = 32;
/// The set of requests is sized for the fastest run, but never above this
/// (about 3 KB each).
const MAX_POOL: usize = 300_000;
/// Requests for each part-by-part timing.
const PARTS_SAMPLE: usize = 1_000;

pub fn run(settings: &Settings, out: &std::path::Path) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = settings.threads.max(1);
    let runs = settings.runs.max(1);
    let lab = Lab::new()?;
    let signed_at = SystemTime::now();
    let now = signed_at + Duration::from_secs(1);
    println!(
        "Verifier::verify, {runs} runs of {} s each; {cores} cores, multi-threaded runs on {threads} threads",
        settings.seconds
    );
    println!(
        "verif/s: wall clock. per CPU-s: per second of the verifying threads' own CPU time (what one core does, the machine's other load left out). CPU µs: per verification. on core / queued: share of the threads' time running / runnable but waiting for a core"
    );
    let mut rows = Vec::new();
    for &kind in &settings.keys {
        let agent = lab.issue(kind)?;
        let staple = lab.staple(&agent, signed_at)?;

        // Size the set from a quick probe (revocation off: the fastest).
        let probe = agents::sign_many(&agent, &staple, signed_at, 300, cores)?;
        let probe_verifier = verifier(&lab, RevocationMode::Off)?;
        let probed = timed(&probe_verifier, &agent, &probe, 1, f64::INFINITY, now)?;
        let per = probed.cpu.as_secs_f64() / probed.count.max(1) as f64;
        let want = (settings.seconds / per * threads as f64 * 1.3) as usize + 1_000;
        let pool_size = want.min(MAX_POOL);
        let sign_start = Instant::now();
        let pool = agents::sign_many(&agent, &staple, signed_at, pool_size, cores)?;
        println!(
            "\n{}: {} requests signed in {:.1} s (not timed)",
            kind.label(),
            pool.len(),
            sign_start.elapsed().as_secs_f64()
        );
        println!(
            "{:<13} {:>7} {:>26} {:>26} {:>10} {:>9} {:>9}",
            "revocation",
            "threads",
            "verif/s med [min..max]",
            "per CPU-s med [min..max]",
            "CPU µs",
            "on core",
            "queued"
        );

        let mut modes = serde_json::Map::new();
        for (mode_name, mode) in [
            ("off", RevocationMode::Off),
            ("stapled_ocsp", RevocationMode::Required),
        ] {
            let mut by_threads = serde_json::Map::new();
            let mut thread_counts = vec![1];
            if threads > 1 {
                thread_counts.push(threads);
            }
            for t in thread_counts {
                let mut rates = Vec::new();
                let mut per_cpu = Vec::new();
                let mut cpu_us = Vec::new();
                let mut on_core = Vec::new();
                let mut waiting_core = Vec::new();
                let mut exhausted = false;
                for _ in 0..runs {
                    let verifier = verifier(&lab, mode)?;
                    let run = timed(&verifier, &agent, &pool, t, settings.seconds, now)?;
                    exhausted |= run.count == pool.len();
                    let count = run.count.max(1) as f64;
                    rates.push(count / run.wall.as_secs_f64());
                    per_cpu.push(count / run.cpu.as_secs_f64());
                    cpu_us.push(run.cpu.as_secs_f64() * 1e6 / count);
                    // Of the threads' wall time: on a core, waiting for one
                    // (other load); the rest is sleeping (locks).
                    let thread_time = run.wall.as_secs_f64() * t as f64;
                    on_core.push(100.0 * run.cpu.as_secs_f64() / thread_time);
                    waiting_core.push(100.0 * run.run_delay.as_secs_f64() / thread_time);
                }
                let (rate, per_cpu, cpu_us) = (
                    agents::spread(&rates),
                    agents::spread(&per_cpu),
                    agents::spread(&cpu_us),
                );
                let (on_core, waiting_core) =
                    (agents::spread(&on_core), agents::spread(&waiting_core));
                println!(
                    "{:<13} {:>7} {:>26} {:>26} {:>10.1} {:>8.0}% {:>8.0}%{}",
                    mode_name,
                    t,
                    agents::show(&rate),
                    agents::show(&per_cpu),
                    cpu_us["median"].as_f64().unwrap_or(f64::NAN),
                    on_core["median"].as_f64().unwrap_or(f64::NAN),
                    waiting_core["median"].as_f64().unwrap_or(f64::NAN),
                    if exhausted {
                        "  (ran out of requests)"
                    } else {
                        ""
                    }
                );
                by_threads.insert(
                    format!("threads_{t}"),
                    json!({
                        "threads": t,
                        "verifications_per_s_wall": rate,
                        "verifications_per_cpu_s": per_cpu,
                        "cpu_us_per_verification": cpu_us,
                        "percent_of_thread_time_on_a_core": on_core,
                        "percent_of_thread_time_waiting_for_a_core": waiting_core,
                        "ran_out_of_requests": exhausted,
                    }),
                );
            }
            modes.insert(mode_name.into(), serde_json::Value::Object(by_threads));
        }

        let parts = parts(&lab, &agent, &pool, now, runs.max(5))?;
        print_parts(&parts);
        rows.push(json!({
            "key": kind.label(),
            "alg": SigAlg::for_spki(agent.cert_spki()?.as_slice()).map(SigAlg::name),
            "requests_signed": pool.len(),
            "revocation": modes,
            "parts_cpu_us": parts,
        }));
    }
    let report = json!({
        "question": "Verifier::verify throughput per core, and how much of it is chain verification vs the RFC 9421 signature",
        "machine": { "cores": cores, "note": "wall-clock rates depend on the machine's other load (see percent_of_thread_time_waiting_for_a_core); CPU-time figures leave it out" },
        "seconds_per_run": settings.seconds,
        "runs": runs,
        "threads": threads,
        "ca_key": "P-256 (as `kakunin ca init` makes)",
        "request": { "method": METHOD, "authority": AUTHORITY, "path": PATH, "body_bytes": BODY.len(), "peer_chain": "the agent certificate, as over mTLS" },
        "rows": rows,
        "measured_at_unix": agents::unix_secs(SystemTime::now()),
    });
    agents::write_report(out, &report)
}

fn verifier(lab: &Lab, revocation: RevocationMode) -> anyhow::Result<Verifier> {
    let mut config = VerifierConfig::new(vec![lab.ca_der.clone()]);
    config.revocation = revocation;
    Ok(Verifier::new(config)?)
}

fn request<'a>(signed: &'a Signed, peer_chain: &'a [CertificateDer<'a>]) -> Request<'a> {
    Request {
        method: METHOD,
        scheme: "https",
        authority: AUTHORITY,
        path_and_query: PATH,
        headers: &signed.headers,
        body: BODY,
        peer_chain,
    }
}

/// What one timed run did.
struct Run {
    count: usize,
    wall: Duration,
    /// The verifying threads' CPU time, summed.
    cpu: Duration,
    /// Their time runnable but without a core (the machine's other load),
    /// summed.
    run_delay: Duration,
}

/// Verifies requests from `pool` on `threads` threads sharing `verifier`
/// until `seconds` have passed or the pool is used up; every one must be
/// accepted.
fn timed(
    verifier: &Verifier,
    agent: &Agent,
    pool: &[Signed],
    threads: usize,
    seconds: f64,
    now: SystemTime,
) -> anyhow::Result<Run> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let cpu_ns = AtomicU64::new(0);
    let delay_ns = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let failure = Mutex::new(None::<String>);
    let peer_chain = std::slice::from_ref(&agent.cert_der);
    let limit = Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let cpu_start = agents::thread_cpu();
                let delay_start = agents::thread_run_delay();
                let mut mine = 0;
                while !stop.load(Ordering::Relaxed) {
                    let from = next.fetch_add(BATCH, Ordering::Relaxed);
                    let Some(batch) = pool.get(from..(from + BATCH).min(pool.len())) else {
                        break;
                    };
                    if batch.is_empty() {
                        break;
                    }
                    for signed in batch {
                        match verifier.verify(&request(signed, peer_chain), now) {
                            Outcome::Accepted(verdict) => {
                                black_box(verdict);
                            }
                            other => {
                                stop.store(true, Ordering::Relaxed);
                                if let Ok(mut slot) = failure.lock() {
                                    slot.get_or_insert_with(|| format!("{other:?}"));
                                }
                                break;
                            }
                        }
                        mine += 1;
                    }
                    if start.elapsed() >= limit {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                let cpu = agents::thread_cpu().saturating_sub(cpu_start);
                let delay = agents::thread_run_delay().saturating_sub(delay_start);
                let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                cpu_ns.fetch_add(ns(cpu), Ordering::Relaxed);
                delay_ns.fetch_add(ns(delay), Ordering::Relaxed);
                done.fetch_add(mine, Ordering::Relaxed);
            });
        }
    });
    let wall = start.elapsed();
    if let Some(why) = failure.lock().ok().and_then(|mut f| f.take()) {
        anyhow::bail!("a request was not accepted: {why}");
    }
    Ok(Run {
        count: done.load(Ordering::Relaxed),
        wall,
        cpu: Duration::from_nanos(cpu_ns.load(Ordering::Relaxed)),
        run_delay: Duration::from_nanos(delay_ns.load(Ordering::Relaxed)),
    })
}

type Part<'a> = (&'static str, Box<dyn FnMut() -> anyhow::Result<()> + 'a>);

/// The verifier's steps timed alone, single-threaded: CPU µs per request,
/// the median of `rounds` rounds, each round timing every part once (so
/// that a change in the machine's load falls on all of them alike).
fn parts(
    lab: &Lab,
    agent: &Agent,
    pool: &[Signed],
    now: SystemTime,
    rounds: usize,
) -> anyhow::Result<serde_json::Value> {
    let sample = pool.get(..PARTS_SAMPLE.min(pool.len())).unwrap_or(pool);
    let now_unix = agents::unix_secs(now);
    let peer_chain = std::slice::from_ref(&agent.cert_der);
    let leaf = &agent.cert_der;
    let spki = agent.cert_spki()?;
    let alg = SigAlg::for_spki(&spki).context("the agent key type")?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let target = TargetUri::new("https", AUTHORITY, PATH);
    let anchor = webpki::anchor_from_trusted_cert(&lab.ca_der)
        .map_err(|e| anyhow::anyhow!("trust anchor: {e}"))?
        .to_owned();
    let anchors = [anchor];
    let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now_unix)?));
    // Signature bases made ahead, for the public-key operation alone.
    let prepared = sample
        .iter()
        .map(|signed| -> anyhow::Result<(String, Vec<u8>)> {
            let parsed = httpsig::parse_signature(&signed.headers, httpsig::LABEL)?;
            let base = httpsig::signature_base(
                &Message::Request {
                    method: METHOD,
                    target: &target,
                    headers: &signed.headers,
                },
                &parsed.input,
            )?;
            Ok((base, parsed.signature))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    // The whole of `verify` (a fresh verifier per pass: each request once
    // per replay cache).
    let whole = |mode| {
        move || -> anyhow::Result<()> {
            let verifier = verifier(lab, mode)?;
            for signed in sample {
                match verifier.verify(&request(signed, peer_chain), now) {
                    Outcome::Accepted(v) => {
                        black_box(v);
                    }
                    other => anyhow::bail!("not accepted: {other:?}"),
                }
            }
            Ok(())
        }
    };
    let mut parts: Vec<Part<'_>> = vec![
        (
            "verify_revocation_off",
            Box::new(whole(RevocationMode::Off)),
        ),
        (
            "verify_stapled_ocsp",
            Box::new(whole(RevocationMode::Required)),
        ),
        // The chain: what the verifier hands rustls-webpki.
        (
            "chain_webpki",
            Box::new(|| {
                for _ in sample {
                    let end_entity = webpki::EndEntityCert::try_from(leaf)
                        .map_err(|e| anyhow::anyhow!("leaf: {e}"))?;
                    let path = end_entity
                        .verify_for_usage(
                            webpki::ALL_VERIFICATION_ALGS,
                            &anchors,
                            &[],
                            at,
                            webpki::KeyUsage::client_auth(),
                            None,
                            None,
                        )
                        .map_err(|e| anyhow::anyhow!("chain: {e}"))?;
                    black_box(path.anchor());
                }
                Ok(())
            }),
        ),
        // x509-parser on the leaf: the verifier does it twice per request
        // (identity and scope; the signature key).
        (
            "leaf_x509_parse_each",
            Box::new(|| {
                for _ in sample {
                    let parsed = x509_parser::parse_x509_certificate(leaf.as_ref())
                        .map_err(|e| anyhow::anyhow!("leaf: {e}"))?;
                    black_box(parsed.1.extensions().len());
                }
                Ok(())
            }),
        ),
        (
            "certificate_header_base64",
            Box::new(|| {
                for signed in sample {
                    let value = signed
                        .headers
                        .get(httpsig::X_AGENT_CERTIFICATE)
                        .context("no certificate header")?;
                    black_box(b64.decode(value.as_bytes())?);
                }
                Ok(())
            }),
        ),
        // The staple: decode and verify_response (which checks that the CA
        // signed the leaf, then the response's signature).
        (
            "staple_decode_and_verify",
            Box::new(|| {
                for signed in sample {
                    let value = signed
                        .headers
                        .get(httpsig::X_AGENT_OCSP)
                        .context("no staple")?;
                    let der = b64.decode(value.as_bytes())?;
                    let verified = kakunin_authority::ocsp::verify_response(
                        &der,
                        leaf.as_ref(),
                        lab.ca_der.as_ref(),
                        now_unix,
                        None,
                    )?;
                    black_box(verified.status);
                }
                Ok(())
            }),
        ),
        // ... of which: the CA's signature on the leaf, verified again.
        (
            "staple_issuer_check",
            Box::new(|| {
                for _ in sample {
                    kakunin_authority::ocsp::check_issuer(leaf.as_ref(), lab.ca_der.as_ref())?;
                }
                Ok(())
            }),
        ),
        // The RFC 9421 signature: parse, profile, base + verify, digest.
        (
            "signature_parse_base_verify_digest",
            Box::new(|| {
                for signed in sample {
                    let parsed = httpsig::parse_signature(&signed.headers, httpsig::LABEL)?;
                    httpsig::check_profile(&parsed, &signed.headers)?;
                    let message = Message::Request {
                        method: METHOD,
                        target: &target,
                        headers: &signed.headers,
                    };
                    httpsig::verify_signature(&message, &parsed, &spki)?;
                    let digest = httpsig::field_value(&signed.headers, "content-digest")?
                        .context("no content-digest")?;
                    httpsig::check_content_digest(&digest, BODY)?;
                }
                Ok(())
            }),
        ),
        // ... of which: the public-key operation alone.
        (
            "signature_crypto_only",
            Box::new(|| {
                for (base, signature) in &prepared {
                    httpsig::verify(alg, &spki, base.as_bytes(), signature)?;
                }
                Ok(())
            }),
        ),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); parts.len()];
    for _ in 0..rounds.max(1) {
        for ((_, part), times) in parts.iter_mut().zip(&mut times) {
            let start = agents::thread_cpu();
            part()?;
            let cpu = agents::thread_cpu().saturating_sub(start);
            times.push(cpu.as_secs_f64() * 1e6 / sample.len().max(1) as f64);
        }
    }
    let mut out = serde_json::Map::new();
    out.insert("sample_requests".into(), sample.len().into());
    out.insert("rounds".into(), rounds.into());
    let mut get = std::collections::HashMap::new();
    for ((name, _), mut times) in parts.iter().zip(times) {
        times.sort_by(f64::total_cmp);
        let median = agents::median(&times);
        get.insert(*name, median);
        out.insert((*name).into(), agents::round1(median).into());
    }
    let part = |name: &str| get.get(name).copied().unwrap_or(f64::NAN);
    let (off, stapled) = (part("verify_revocation_off"), part("verify_stapled_ocsp"));
    let share = |p: f64, of: f64| agents::round1(p / of * 100.0);
    let chain = part("chain_webpki");
    let leaf_parse = part("leaf_x509_parse_each");
    let signature = part("signature_parse_base_verify_digest");
    let staple = part("staple_decode_and_verify");
    let cacheable = chain + leaf_parse;
    out.insert(
        "percent_of_verify_revocation_off".into(),
        json!({
            "chain_webpki": share(chain, off),
            "leaf_x509_parses": share(2.0 * leaf_parse, off),
            "signature_all": share(signature, off),
            "signature_crypto_only": share(part("signature_crypto_only"), off),
            "other": share(off - chain - 2.0 * leaf_parse - signature, off),
        }),
    );
    out.insert(
        "percent_of_verify_stapled_ocsp".into(),
        json!({
            "chain_webpki": share(chain, stapled),
            "leaf_x509_parses": share(2.0 * leaf_parse, stapled),
            "staple": share(staple, stapled),
            "staple_issuer_check": share(part("staple_issuer_check"), stapled),
            "signature_all": share(signature, stapled),
            "signature_crypto_only": share(part("signature_crypto_only"), stapled),
            "other": share(stapled - chain - 2.0 * leaf_parse - staple - signature, stapled),
        }),
    );
    out.insert(
        "per_certificate_chain_cache_would_skip".into(),
        json!({
            "what": "chain_webpki + one leaf parse (the identity and scope read from it)",
            "us": agents::round1(cacheable),
            "percent_of_verify_revocation_off": share(cacheable, off),
            "percent_of_verify_stapled_ocsp": share(cacheable, stapled),
        }),
    );
    Ok(out.into())
}

fn print_parts(parts: &serde_json::Value) {
    let get = |key: &str| parts[key].as_f64().unwrap_or(f64::NAN);
    println!(
        "parts, CPU µs per request (one thread, median of {} rounds over {} requests):",
        parts["rounds"], parts["sample_requests"]
    );
    for (label, key) in [
        ("verify, revocation off", "verify_revocation_off"),
        ("verify, stapled OCSP", "verify_stapled_ocsp"),
        ("  chain (rustls-webpki)", "chain_webpki"),
        ("  leaf x509 parse (x2 per verify)", "leaf_x509_parse_each"),
        ("  X-Agent-Certificate base64", "certificate_header_base64"),
        ("  staple decode + verify", "staple_decode_and_verify"),
        ("    of which CA sig on leaf again", "staple_issuer_check"),
        (
            "  RFC 9421 parse+base+verify+digest",
            "signature_parse_base_verify_digest",
        ),
        ("    of which public-key verify", "signature_crypto_only"),
    ] {
        println!("  {label:<38} {:>8.1}", get(key));
    }
    let off = &parts["percent_of_verify_revocation_off"];
    let stapled = &parts["percent_of_verify_stapled_ocsp"];
    println!(
        "  share of verify, off / stapled: chain {}% / {}%, RFC 9421 signature {}% / {}%, staple - / {}%",
        off["chain_webpki"],
        stapled["chain_webpki"],
        off["signature_all"],
        stapled["signature_all"],
        stapled["staple"]
    );
}
