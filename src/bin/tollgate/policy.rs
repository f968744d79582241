//! `tollgate policy ...`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use tollgate::policy::{
    DocumentError, MatrixFormat, Policy, Probe, ReviewerKey, ReviewerPublicKey, SignatureFile,
    Trust,
};

use crate::Failure;

mod replay;

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Validate a document; print its version and the warnings a reviewer would want.
    Check {
        /// The policy file (`.toml`, or JSON).
        file: PathBuf,
        /// Exit 1 if there is any warning.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Dry-run one call through the whole pipeline and print every stage's verdict.
    Explain(ExplainArgs),
    /// Semantic differences between two documents (permissions, thresholds, limits).
    Diff {
        /// The current policy.
        old: PathBuf,
        /// The candidate policy.
        new: PathBuf,
        /// Exit 1 if the documents differ.
        #[arg(long)]
        exit_code: bool,
    },
    /// The access-control matrix for sign-off.
    Matrix {
        /// The policy file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Md)]
        format: Format,
        /// Write here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Create a reviewer key pair: KEY (private, PKCS#8 PEM, mode 0600) and KEY.pub.
    Keygen {
        /// Where to write the private key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a document's version as a reviewer; adds to FILE.sig (or --sig).
    Sign {
        /// The policy file.
        file: PathBuf,
        /// The reviewer's private key (PKCS#8 PEM, e.g. from `openssl genpkey -algorithm ed25519`).
        #[arg(long)]
        key: PathBuf,
        /// The reviewer's name, as it will appear in the signature.
        #[arg(long)]
        reviewer: String,
        /// The signature file (default: the policy file's path with `.sig` appended).
        #[arg(long)]
        sig: Option<PathBuf>,
    },
    /// Check a document's signatures against trusted reviewer keys.
    Verify {
        /// The policy file.
        file: PathBuf,
        /// A trusted reviewer public key (SPKI PEM); repeat for each.
        #[arg(long = "trust", required = true)]
        trust: Vec<PathBuf>,
        /// How many distinct trusted keys must have signed.
        #[arg(long, default_value_t = 1)]
        threshold: usize,
        /// The signature file (default: the policy file's path with `.sig` appended).
        #[arg(long)]
        sig: Option<PathBuf>,
    },
    /// Re-decide every call of an audit log under a candidate policy and report what would
    /// change (would block / allow / escalate), with counts per change and tool, the first
    /// examples, and the decisions redacted arguments leave uncertain.
    Replay(replay::ReplayArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// The policy file.
    file: PathBuf,
    /// The run's role.
    #[arg(long)]
    role: String,
    /// The tool.
    #[arg(long)]
    tool: String,
    /// The arguments as JSON.
    #[arg(long, default_value = "{}")]
    args: String,
    /// The run's compartment.
    #[arg(long)]
    compartment: Option<String>,
    /// The agent's confidence (0 to 1).
    #[arg(long)]
    confidence: Option<f32>,
    /// A flag set on the call; repeat for several.
    #[arg(long = "flag")]
    flags: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// Markdown.
    Md,
    /// CSV, one row per role and tool.
    Csv,
    /// A standalone HTML page.
    Html,
}

pub(crate) fn run(cmd: PolicyCommand) -> Result<ExitCode, Failure> {
    match cmd {
        PolicyCommand::Check {
            file,
            deny_warnings,
        } => {
            let p = load(&file)?;
            let warnings = p.warnings();
            println!(
                "{}: ok: `{}`, {} tools, {} roles, version {}",
                file.display(),
                p.document().policy.name,
                p.document().tools.len(),
                p.document().roles.len(),
                p.version()
            );
            for w in &warnings {
                match w.location {
                    Some(l) => println!(
                        "{}:{}:{}: warning: `{}`: {} [{}]",
                        file.display(),
                        l.line,
                        l.column,
                        w.path,
                        w.message,
                        w.code
                    ),
                    None => println!("{}: warning: {w}", file.display()),
                }
            }
            if deny_warnings && !warnings.is_empty() {
                return Err(Failure::Input(format!(
                    "{} warning(s) and --deny-warnings",
                    warnings.len()
                )));
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Explain(a) => {
            let p = load(&a.file)?;
            let flags: Vec<&str> = a.flags.iter().map(String::as_str).collect();
            let mut probe = Probe::new(&a.role, &a.tool, &a.args);
            probe.compartment = a.compartment.as_deref();
            probe.confidence = a.confidence;
            probe.flags = &flags;
            print!("{}", p.explain(&probe));
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Diff {
            old,
            new,
            exit_code,
        } => {
            let (a, b) = (load(&old)?, load(&new)?);
            let changes = tollgate::policy::diff(&a, &b);
            println!("{} -> {}", a.version(), b.version());
            if changes.is_empty() {
                println!("no differences");
            }
            for c in &changes {
                println!("{c}");
            }
            Ok(if exit_code && !changes.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        PolicyCommand::Matrix { file, format, out } => {
            let p = load(&file)?;
            let text = p.matrix(match format {
                Format::Md => MatrixFormat::Markdown,
                Format::Csv => MatrixFormat::Csv,
                Format::Html => MatrixFormat::Html,
            });
            match out {
                Some(path) => std::fs::write(&path, text)
                    .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?,
                None => {
                    let _ = std::io::stdout().write_all(text.as_bytes());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Keygen { out } => {
            let key = ReviewerKey::generate().map_err(input)?;
            let pem = key.to_pem().map_err(input)?;
            write_private(&out, secrecy::ExposeSecret::expose_secret(&pem))?;
            let mut public = out.as_os_str().to_owned();
            public.push(".pub");
            let public = PathBuf::from(public);
            std::fs::write(&public, key.public().to_pem())
                .map_err(|e| Failure::Input(format!("{}: {e}", public.display())))?;
            println!(
                "wrote {} (private) and {} (public), key id {}",
                out.display(),
                public.display(),
                key.public().id()
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Sign {
            file,
            key,
            reviewer,
            sig,
        } => {
            let p = load(&file)?;
            let key = ReviewerKey::from_file(&key).map_err(input)?;
            let sig_path = sig.unwrap_or_else(|| SignatureFile::path_for(&file));
            let mut sigs = if sig_path.exists() {
                SignatureFile::from_file(&sig_path).map_err(input)?
            } else {
                SignatureFile::default()
            };
            let signature = key.sign(&p, &reviewer).map_err(input)?;
            let id = signature.key_id.clone();
            sigs.add(signature);
            sigs.write(&sig_path).map_err(input)?;
            println!(
                "{reviewer} ({id}) signed version {} into {}",
                p.version(),
                sig_path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Verify {
            file,
            trust,
            threshold,
            sig,
        } => {
            let p = load(&file)?;
            let keys = trust
                .iter()
                .map(ReviewerPublicKey::from_file)
                .collect::<Result<Vec<_>, _>>()
                .map_err(input)?;
            let trust = Trust::new(keys, threshold).map_err(input)?;
            let sig_path = sig.unwrap_or_else(|| SignatureFile::path_for(&file));
            let sigs = SignatureFile::from_file(&sig_path).map_err(input)?;
            let reviewers = trust.verify(&p, &sigs).map_err(input)?;
            println!(
                "{}: version {} signed by {}",
                file.display(),
                p.version(),
                reviewers.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Replay(a) => {
            let p = load(a.policy_file())?;
            replay::run(&p, a)
        }
    }
}

fn input(e: impl std::fmt::Display) -> Failure {
    Failure::Input(format!("error: {e}"))
}

/// Loads a policy; an invalid one is reported as `FILE:LINE:COLUMN: error: ...`.
fn load(path: &Path) -> Result<Policy, Failure> {
    Policy::from_file(path).map_err(|e| {
        let at = match e.location() {
            Some(l) => format!("{}:{}:{}", path.display(), l.line, l.column),
            None => path.display().to_string(),
        };
        let msg = match &e {
            DocumentError::Io { .. } => e.to_string(),
            _ => {
                let text = e.to_string();
                // The location is already in the prefix.
                match (e.location(), text.split_once(": ")) {
                    (Some(_), Some((_, rest))) => rest.to_owned(),
                    _ => text,
                }
            }
        };
        Failure::Input(format!("{at}: error: {msg}"))
    })
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), Failure> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))
}
