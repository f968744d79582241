//! Bounded reads of the PEM files the TLS clients are given: the MCP gateway's `ca_file` and
//! client certificate and key (feature `mcp`), the PostgreSQL backend's `tls_root_cert`
//! (feature `postgres`).

use std::io::Read;
use std::path::Path;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use secrecy::zeroize::Zeroizing;

/// Longest key or certificate file read (a PEM chain of a few certificates is a few KiB): a
/// path pointing at something huge is refused instead of read into memory.
pub(crate) const MAX_PEM_BYTES: u64 = 1 << 20;

/// Reads a `ca_file`: at least one PEM `CERTIFICATE` block, each a certificate usable as a trust
/// anchor. The error says which file and what is wrong with it.
pub(crate) fn read_ca_file(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    // The same bounded read of a regular file as the client certificate's (no FIFO, no giant).
    let pem = read_bounded(path, "CA", |_| Ok(()))?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| format!("CA file `{shown}` is not valid PEM: {e}"))?;
        roots.add(cert).map_err(|e| {
            format!(
                "certificate {} of CA file `{shown}` is not a usable CA certificate: {e}",
                i + 1
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "CA file `{shown}` holds no PEM `CERTIFICATE` block"
        ));
    }
    Ok(roots)
}

/// Reads the regular file `path` (at most [`MAX_PEM_BYTES`]) after `check` accepted its
/// metadata, taken from the opened file itself so the checked file is the one read. The
/// buffer is zeroed when dropped.
pub(crate) fn read_bounded(
    path: &Path,
    what: &str,
    check: impl FnOnce(&std::fs::Metadata) -> Result<(), String>,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let shown = path.display();
    let cannot = |e: std::io::Error| format!("cannot read {what} file `{shown}`: {e}");
    // Refused before opening: opening a FIFO would block the document's load.
    if !std::fs::metadata(path).map_err(cannot)?.is_file() {
        return Err(format!("{what} file `{shown}` is not a regular file"));
    }
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!("{what} file `{shown}` is not a regular file"));
    }
    check(&meta)?;
    if meta.len() > MAX_PEM_BYTES {
        return Err(format!(
            "{what} file `{shown}` is larger than {MAX_PEM_BYTES} bytes"
        ));
    }
    // Sized up front so the key is never copied by a growing buffer.
    let mut buf = Zeroizing::new(Vec::with_capacity(
        usize::try_from(meta.len()).unwrap_or(0) + 1,
    ));
    (&mut file)
        .take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(cannot)?;
    if buf.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "{what} file `{shown}` is larger than {MAX_PEM_BYTES} bytes"
        ));
    }
    Ok(buf)
}
