//! Renders `service-template/` as `cargo generate` would, then checks the generated project:
//! `cargo fmt --check`, `cargo build`, `cargo clippy --all-targets -- -D warnings`, and a run of
//! the binary that must exit 0.
//!
//! The rendering is done here, without cargo-generate: every file is copied with the
//! placeholders `{{project-name}}`, `{{crate_name}}` and `{{actormesh_dependency}}` replaced
//! (the last by a path dependency on this checkout's framework), and the test fails if any other
//! template syntax is left. The generated project is built with its own `CARGO_TARGET_DIR`
//! (`target/template-build`): a nested cargo sharing the outer build's target directory would
//! wait for ever on the lock the outer `cargo test` holds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const PROJECT_NAME: &str = "hello-mesh";
const CRATE_NAME: &str = "hello_mesh";

/// How long the generated binary may run before it counts as hung.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the book crate sits in the workspace")
        .to_path_buf()
}

/// The value of each placeholder, as cargo-generate would be given it.
fn placeholders(root: &Path) -> Vec<(&'static str, String)> {
    let framework = root.join("framework");
    assert!(
        framework.join("Cargo.toml").is_file(),
        "no framework crate at {}",
        framework.display()
    );
    // A TOML literal string: no escaping needed for the path.
    let dependency = format!("{{ path = '{}' }}", framework.display());
    vec![
        ("project-name", PROJECT_NAME.to_owned()),
        ("crate_name", CRATE_NAME.to_owned()),
        ("actormesh_dependency", dependency),
    ]
}

/// Replaces `{{name}}` (and `{{ name }}`) by each value; fails on any template syntax left.
fn render_text(file: &Path, text: &str, vars: &[(&str, String)]) -> String {
    let mut out = text.to_owned();
    for (name, value) in vars {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
        out = out.replace(&format!("{{{{ {name} }}}}"), value);
    }
    for syntax in ["{{", "{%"] {
        if let Some(at) = out.find(syntax) {
            let line = out[..at].lines().count().max(1);
            panic!(
                "{}:{line}: template syntax `{syntax}` left after rendering; \
                 the template may only use the placeholders {:?}",
                file.display(),
                vars.iter().map(|(n, _)| *n).collect::<Vec<_>>()
            );
        }
    }
    out
}

/// Copies the template into `out`, rendering every text file. cargo-generate's own settings
/// file is not part of the generated project.
fn render_dir(template: &Path, out: &Path, vars: &[(&str, String)]) -> usize {
    fs::create_dir_all(out).expect("create the output directory");
    let mut files = 0;
    let mut entries: Vec<_> = fs::read_dir(template)
        .expect("read the template directory")
        .map(|e| e.expect("a directory entry"))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if matches!(name.as_ref(), "cargo-generate.toml" | "target" | ".git") {
            continue;
        }
        let from = entry.path();
        let to = out.join(&*name);
        if entry.file_type().expect("a file type").is_dir() {
            files += render_dir(&from, &to, vars);
            continue;
        }
        let bytes = fs::read(&from).expect("read a template file");
        match String::from_utf8(bytes) {
            Ok(text) => fs::write(&to, render_text(&from, &text, vars)),
            Err(binary) => fs::write(&to, binary.into_bytes()),
        }
        .expect("write a rendered file");
        files += 1;
    }
    files
}

/// A cargo command in the generated project, with its own target directory.
fn cargo(project: &Path, target_dir: &Path, args: &[&str]) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(args)
        .current_dir(project)
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null());
    command
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

fn check(what: &str, output: Output) {
    assert!(
        output.status.success(),
        "`{what}` failed in the generated project ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        tail(&output.stdout),
        tail(&output.stderr)
    );
}

fn run(what: &str, mut command: Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
    check(what, output);
}

/// Runs the generated binary and waits for it to exit, killing it after [`RUN_LIMIT`].
fn run_binary(binary: &Path) -> Output {
    let child = Command::new(binary)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let pid = child.id();
    // A thread waits for the exit; this one waits for that thread's word, up to the limit.
    let (exited, exit) = mpsc::channel();
    thread::spawn(move || {
        let _ = exited.send(child.wait_with_output());
    });
    match exit.recv_timeout(RUN_LIMIT) {
        Ok(output) => output.expect("collect the output"),
        Err(_) => {
            // The waiting thread owns the child (and has not reaped it): kill it by its pid.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let output = exit
                .recv()
                .expect("the waiting thread reports")
                .expect("collect the output");
            panic!(
                "{} did not exit within {RUN_LIMIT:?}:\n--- stdout\n{}\n--- stderr\n{}",
                binary.display(),
                tail(&output.stdout),
                tail(&output.stderr)
            );
        }
    }
}

#[test]
fn service_template_renders_builds_passes_lints_and_runs() {
    let root = workspace_root();
    let template = root.join("service-template");
    let project = root
        .join("target")
        .join("template-render")
        .join(PROJECT_NAME);
    let target_dir = root.join("target").join("template-build");

    if project.exists() {
        fs::remove_dir_all(&project).expect("remove the previous rendering");
    }
    let files = render_dir(&template, &project, &placeholders(&root));
    assert!(files >= 3, "only {files} files rendered");
    assert!(project.join("Cargo.toml").is_file() && project.join("src/main.rs").is_file());
    // Start from the workspace's lock file: the generated project then builds with the
    // dependency versions the workspace is tested with (cargo drops what it does not need).
    let lock = root.join("Cargo.lock");
    if lock.is_file() {
        fs::copy(&lock, project.join("Cargo.lock")).expect("copy Cargo.lock");
    }

    run(
        "cargo fmt --check",
        cargo(&project, &target_dir, &["fmt", "--check"]),
    );
    run("cargo build", cargo(&project, &target_dir, &["build"]));
    run(
        "cargo clippy --all-targets -- -D warnings",
        cargo(
            &project,
            &target_dir,
            &["clippy", "--all-targets", "--", "-D", "warnings"],
        ),
    );

    let binary = target_dir
        .join("debug")
        .join(format!("{PROJECT_NAME}{}", std::env::consts::EXE_SUFFIX));
    let output = run_binary(&binary);
    check(&binary.display().to_string(), output.clone());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("self-check passed: hello, self-check"),
        "unexpected output of the generated service:\n{stdout}"
    );
}

#[test]
fn rendering_replaces_every_placeholder() {
    let vars = vec![
        ("project-name", "svc".to_owned()),
        ("crate_name", "svc".to_owned()),
    ];
    let out = render_text(
        Path::new("x"),
        "name = \"{{project-name}}\"\nid = \"{{ crate_name }}.Msg\"\n",
        &vars,
    );
    assert_eq!(out, "name = \"svc\"\nid = \"svc.Msg\"\n");
}

#[test]
#[should_panic(expected = "template syntax `{{` left after rendering")]
fn rendering_refuses_unknown_placeholders() {
    render_text(Path::new("x"), "a = {{unknown}}\n", &[]);
}
