//! The stack's certificates: a CA, the API server's, the process node's and
//! the Kafka broker's serving certificates, an admin client certificate and
//! the service-account key pair, made once per state directory with openssl.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use crate::Error;
use crate::process::run_checked;

/// A certificate the CA signs: file stem, subject, and its extensions.
struct Leaf {
    stem: &'static str,
    subject: &'static str,
    extensions: String,
}

/// The stack's leaf certificates; the serving ones name the stack-side
/// address, where the API server and the process node listen.
fn leaves(addr: Ipv4Addr) -> [Leaf; 4] {
    [
        Leaf {
            stem: "apiserver",
            subject: "/CN=kube-apiserver",
            extensions: format!(
                "subjectAltName=IP:{addr},IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,\
                 DNS:kubernetes.default,DNS:kubernetes.default.svc,\
                 DNS:kubernetes.default.svc.cluster.local\n\
                 extendedKeyUsage=serverAuth\n"
            ),
        },
        Leaf {
            stem: "admin",
            subject: "/O=system:masters/CN=admin",
            extensions: "extendedKeyUsage=clientAuth\n".into(),
        },
        // Serving certificate of the process node's kubelet API.
        Leaf {
            stem: "kubelet",
            subject: "/CN=process-node",
            extensions: format!(
                "subjectAltName=IP:{addr},IP:127.0.0.1,DNS:localhost,DNS:process-node\n\
                 extendedKeyUsage=serverAuth\n"
            ),
        },
        // Serving certificate of the broker's SASL_SSL listener.
        Leaf {
            stem: "kafka",
            subject: "/CN=kafka",
            extensions: format!(
                "subjectAltName=IP:{addr},IP:127.0.0.1,DNS:localhost,DNS:kafka\n\
                 extendedKeyUsage=serverAuth\n"
            ),
        },
    ]
}

/// The broker's PEM key store: its key (PKCS#8, as `openssl req -nodes`
/// writes it) and certificate in one file, as Kafka's `PEM` key store
/// type reads them.
pub const KAFKA_KEY_STORE: &str = "kafka.pem";

fn openssl(dir: &Path, args: &[&str]) -> Result<(), Error> {
    let what = format!("openssl {}", args.join(" "));
    run_checked(Command::new("openssl").args(args).current_dir(dir), what).map(drop)
}

/// A CA of its own in `dir` (`ca.key`, `ca.crt`, ten years): the stack's,
/// or one a test needs that signed nothing the stack shows.
pub fn self_signed_ca(dir: &Path, subject: &str) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", subject,
            "-keyout", "ca.key", "-out", "ca.crt",
        ],
    )
}

/// Makes the certificates in `dir` unless they are there already for `addr`.
pub fn ensure(dir: &Path, addr: Ipv4Addr) -> Result<(), Error> {
    let stamp = dir.join("address");
    let made_for = std::fs::read_to_string(&stamp).ok();
    if made_for.as_deref() == Some(&addr.to_string())
        && dir.join("sa.pub").is_file()
        && dir.join(KAFKA_KEY_STORE).is_file()
    {
        return Ok(());
    }
    self_signed_ca(dir, "/CN=heartbeat-local-ca")?;
    for leaf in &leaves(addr) {
        let (key, csr, ext, crt) = (
            format!("{}.key", leaf.stem),
            format!("{}.csr", leaf.stem),
            format!("{}.ext", leaf.stem),
            format!("{}.crt", leaf.stem),
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                leaf.subject,
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        )?;
        std::fs::write(dir.join(&ext), &leaf.extensions)
            .map_err(|e| Error::io(&dir.join(&ext), e))?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "3650",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
        )?;
        let _ = std::fs::remove_file(dir.join(&csr));
        let _ = std::fs::remove_file(dir.join(&ext));
    }
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).map_err(|e| Error::io(&dir.join(name), e))
    };
    let store = dir.join(KAFKA_KEY_STORE);
    std::fs::write(&store, read("kafka.key")? + &read("kafka.crt")?)
        .map_err(|e| Error::io(&store, e))?;
    openssl(dir, &["genrsa", "-out", "sa.key", "2048"])?;
    openssl(dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
    std::fs::write(&stamp, addr.to_string()).map_err(|e| Error::io(&stamp, e))
}
