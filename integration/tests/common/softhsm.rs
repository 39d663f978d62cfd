//! Throwaway SoftHSM2 tokens for tests, with keys generated inside the
//! token (never imported: CKA_SENSITIVE, not extractable).
//!
//! SoftHSM reads `SOFTHSM2_CONF` when the module is first initialised in a
//! process, so [`softhsm`] sets it once (OnceLock) before anything loads
//! the module; child processes (the proxy) inherit it. SoftHSM 2.6 also
//! reads its token directory only then: a token made later by
//! softhsm2-util stays invisible to this process, so every token the tests
//! will use is made up front and handed out by [`SoftHsm::token`]. Also
//! included by
//! kakunin-signer's tests/pkcs11_softhsm.rs, so it uses only cryptoki,
//! tempfile and std.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

/// Where Debian's softhsm2 package puts the module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const SO_PIN: &str = "so-secret-12";
pub const USER_PIN: &str = "user-pin-1234";
/// Tokens made per process; more than any one test file uses.
const TOKENS: usize = 24;

pub struct SoftHsm {
    dir: tempfile::TempDir,
    context: Pkcs11,
}

/// The process's SoftHSM: its own token directory, never the system's.
pub fn softhsm() -> &'static SoftHsm {
    static HSM: OnceLock<SoftHsm> = OnceLock::new();
    HSM.get_or_init(|| {
        let util = Command::new("softhsm2-util").arg("--version").output();
        assert!(
            util.is_ok_and(|o| o.status.success()) && Path::new(MODULE).exists(),
            "SoftHSM2 is not installed (softhsm2-util and {MODULE} are needed): \
             apt-get install softhsm2, or run scripts/test.sh, which installs it"
        );
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .unwrap();
        for i in 0..TOKENS {
            init_token(&conf, &label(i));
        }
        // Before the module is first loaded in this process: SoftHSM reads
        // it at C_Initialize and never again.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let context = Pkcs11::new(MODULE).unwrap();
        match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => panic!("SoftHSM did not initialise: {e}"),
        }
        SoftHsm { dir, context }
    })
}

fn label(i: usize) -> String {
    format!("kakunin-{i}")
}

fn init_token(conf: &Path, label: &str) {
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label])
        .args(["--so-pin", SO_PIN, "--pin", USER_PIN])
        .env("SOFTHSM2_CONF", conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "softhsm2-util --init-token failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Which key to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    P256,
    P384,
    Rsa2048,
    Ed25519,
}

pub struct Token {
    pub label: String,
    pub pin_file: PathBuf,
}

impl SoftHsm {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A token of its own for the caller (made before the module was
    /// loaded), its user PIN in a file with the newline editors write.
    pub fn token(&self) -> Token {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let i = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(
            i < TOKENS,
            "all {TOKENS} SoftHSM tokens are taken: raise TOKENS"
        );
        let label = label(i);
        let pin_file = self.dir.path().join(format!("{label}.pin"));
        std::fs::write(&pin_file, format!("{USER_PIN}\n")).unwrap();
        Token { label, pin_file }
    }

    fn slot(&self, label: &str) -> Slot {
        for slot in self.context.get_slots_with_initialized_token().unwrap() {
            if self.context.get_token_info(slot).unwrap().label() == label {
                return slot;
            }
        }
        panic!("SoftHSM does not show token {label}");
    }

    /// A read-write session on `token`, logged in as the user.
    pub fn session(&self, token: &Token) -> Session {
        let session = self
            .context
            .open_rw_session(self.slot(&token.label))
            .unwrap();
        match session.login(UserType::User, Some(&AuthPin::from(USER_PIN.to_string()))) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => panic!("login to {}: {e}", token.label),
        }
        session
    }
}

impl Token {
    /// `pkcs11:token=...;object=...` with the module and the PIN file.
    pub fn uri(&self, path: &str) -> String {
        format!(
            "pkcs11:token={};{path}?module-path={MODULE}&pin-source=file:{}",
            self.label,
            self.pin_file.display()
        )
    }

    /// Generates a key pair inside the token (C_GenerateKeyPair): the
    /// private half is sensitive and not extractable. Returns the public
    /// key as the token stores it: the CKA_EC_POINT value, or for RSA the
    /// modulus.
    pub fn generate(&self, kind: KeyKind, label: &str, id: &[u8]) -> Vec<u8> {
        let hsm = softhsm();
        let session = hsm.session(self);
        let common = |public: bool| {
            let mut attributes = vec![
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.to_vec()),
            ];
            if public {
                attributes.push(Attribute::Verify(true));
            } else {
                attributes.extend([
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Sign(true),
                ]);
            }
            attributes
        };
        let (mut public, private) = (common(true), common(false));
        let mechanism = match kind {
            KeyKind::P256 | KeyKind::P384 | KeyKind::Ed25519 => {
                // DER OIDs: secp256r1, secp384r1, id-Ed25519.
                let oid: &[u8] = match kind {
                    KeyKind::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
                    KeyKind::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
                    _ => &[0x06, 0x03, 0x2b, 0x65, 0x70],
                };
                public.push(Attribute::EcParams(oid.to_vec()));
                if kind == KeyKind::Ed25519 {
                    Mechanism::EccEdwardsKeyPairGen
                } else {
                    Mechanism::EccKeyPairGen
                }
            }
            KeyKind::Rsa2048 => {
                public.push(Attribute::ModulusBits(2048u64.into()));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                Mechanism::RsaPkcsKeyPairGen
            }
        };
        let (public_handle, private_handle) = session
            .generate_key_pair(&mechanism, &public, &private)
            .unwrap_or_else(|e| panic!("SoftHSM cannot generate a {kind:?} key: {e}"));
        // What the token keeps: the private value is not readable.
        let secret = session
            .get_attributes(
                private_handle,
                &[AttributeType::Value, AttributeType::PrivateExponent],
            )
            .unwrap();
        assert!(
            secret.is_empty(),
            "the private key must not be readable: {secret:?}"
        );
        let wanted = if kind == KeyKind::Rsa2048 {
            AttributeType::Modulus
        } else {
            AttributeType::EcPoint
        };
        match session
            .get_attributes(public_handle, &[wanted])
            .unwrap()
            .pop()
        {
            Some(Attribute::EcPoint(point)) => point,
            Some(Attribute::Modulus(modulus)) => modulus,
            other => panic!("no public key read back: {other:?}"),
        }
    }

    /// Logs this process out of the token (all its sessions at once, as
    /// PKCS#11 login is per application), as a token restart would.
    pub fn log_everyone_out(&self) {
        let session = softhsm().session(self);
        session.logout().unwrap();
    }

    /// How many private keys the token holds.
    pub fn private_keys(&self) -> usize {
        let session = softhsm().session(self);
        session
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .unwrap()
            .len()
    }
}
