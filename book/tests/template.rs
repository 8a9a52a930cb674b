//! Renders `service-template/` with cargo-generate, the way a user does, then checks the
//! generated project: `cargo fmt --check`, `cargo clippy --all-targets -- -D warnings` with and
//! without its `etcd` feature, `cargo build`, the binary's `--self-check`, and the service
//! itself: started, it must say `ready`, and on SIGTERM shut down and exit 0.
//!
//! Rendering runs `cargo generate --path service-template --name hello-mesh --destination …
//! --silent --vcs none --no-workspace -d actormesh_dependency=…` (cargo-generate 0.23.7 or
//! newer; `scripts/ensure-deps.sh --etcd` installs it). cargo-generate renders an unknown
//! placeholder as an empty string, silently: so the test also fails when a template file uses a
//! placeholder other than the known ones, and when any template syntax is left after rendering.
//!
//! The generated project is built with its own `CARGO_TARGET_DIR` (`target/template-build`): a
//! nested cargo sharing the outer build's target directory would wait for ever on the lock the
//! outer `cargo test` holds.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

const PROJECT_NAME: &str = "hello-mesh";

/// The placeholders the template may use: cargo-generate's built-in `project-name` and
/// `crate_name`, and the template's own `actormesh_dependency`.
const PLACEHOLDERS: [&str; 3] = ["project-name", "crate_name", "actormesh_dependency"];

/// How long a run of the binary (the self-check, the shutdown after SIGTERM) may take.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// How long the service may take to say it is ready.
const READY_LIMIT: Duration = Duration::from_secs(30);

/// The line the service logs once it serves.
const READY: &str = "ready: serving hello-mesh.service";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the book crate sits in the workspace")
        .to_path_buf()
}

/// A command of `cargo`, the one running this test when known.
fn cargo_command() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// A cargo command in the generated project, with its own target directory.
fn cargo(project: &Path, target_dir: &Path, args: &[&str]) -> Command {
    let mut command = cargo_command();
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

fn check(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "`{what}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        tail(&output.stdout),
        tail(&output.stderr)
    );
}

fn run(what: &str, mut command: Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
    check(what, &output);
    output
}

/// Renders the template with `cargo generate` into `destination/hello-mesh`, replacing what a
/// previous run left there. `dependency` is the `actormesh_dependency` value, if any.
fn generate(template: &Path, destination: &Path, dependency: Option<&str>) -> PathBuf {
    let project = destination.join(PROJECT_NAME);
    if project.exists() {
        fs::remove_dir_all(&project).expect("remove the previous rendering");
    }
    fs::create_dir_all(destination).expect("create the destination");
    let mut command = cargo_command();
    command
        .arg("generate")
        .arg("--path")
        .arg(template)
        .args(["--name", PROJECT_NAME, "--destination"])
        .arg(destination)
        .args(["--silent", "--vcs", "none", "--no-workspace"])
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null());
    if let Some(dependency) = dependency {
        command
            .arg("-d")
            .arg(format!("actormesh_dependency={dependency}"));
    }
    let output = command.output().expect("cannot run cargo");
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("no such command"),
        "cargo-generate is not installed: run `scripts/ensure-deps.sh --etcd`, or \
         `cargo install cargo-generate --version 0.23.7 --locked`"
    );
    check("cargo generate", &output);
    assert!(
        project.join("Cargo.toml").is_file() && project.join("src/main.rs").is_file(),
        "cargo generate made no project at {}",
        project.display()
    );
    project
}

/// Every `{{ … }}` and `{% … %}` in `text`, as (line, contents).
fn template_tags(text: &str) -> Vec<(usize, String)> {
    let mut tags = Vec::new();
    for (open, close) in [("{{", "}}"), ("{%", "%}")] {
        let mut rest = text;
        let mut offset = 0;
        while let Some(start) = rest.find(open) {
            let line = text[..offset + start].matches('\n').count() + 1;
            let after = &rest[start + open.len()..];
            let contents = after.find(close).map_or(after, |end| &after[..end]);
            tags.push((line, format!("{open}{}{close}", contents)));
            offset += start + open.len();
            rest = &text[offset..];
        }
    }
    tags
}

/// Fails on any tag of the template but `{{ name }}` with one of [`PLACEHOLDERS`]:
/// cargo-generate would render another name as an empty string without a word.
fn check_template_tags(file: &Path, text: &str) {
    for (line, tag) in template_tags(text) {
        let name = tag
            .strip_prefix("{{")
            .and_then(|t| t.strip_suffix("}}"))
            .map(str::trim);
        assert!(
            name.is_some_and(|name| PLACEHOLDERS.contains(&name)),
            "{}:{line}: `{tag}`: the template may only use the placeholders {PLACEHOLDERS:?} \
             (cargo-generate renders an unknown one as an empty string)",
            file.display()
        );
    }
}

/// Fails on any template syntax in `text` (a rendered file).
fn check_rendered(file: &Path, text: &str) {
    if let Some((line, tag)) = template_tags(text).into_iter().next() {
        panic!(
            "{}:{line}: template syntax `{tag}` left after rendering",
            file.display()
        );
    }
}

/// Applies `check` to every UTF-8 file under `dir` (`target/` and `.git/` left out); returns
/// how many files it saw.
fn for_each_text_file(dir: &Path, check: &mut dyn FnMut(&Path, &str)) -> usize {
    let mut files = 0;
    for entry in fs::read_dir(dir).expect("read a directory") {
        let entry = entry.expect("a directory entry");
        let path = entry.path();
        if entry.file_type().expect("a file type").is_dir() {
            if !matches!(entry.file_name().to_str(), Some("target" | ".git")) {
                files += for_each_text_file(&path, check);
            }
            continue;
        }
        if let Ok(text) = fs::read_to_string(&path) {
            check(&path, &text);
        }
        files += 1;
    }
    files
}

/// The line of `Cargo.toml` that declares the actormesh dependency.
fn actormesh_line(project: &Path) -> String {
    let manifest = fs::read_to_string(project.join("Cargo.toml")).expect("read Cargo.toml");
    manifest
        .lines()
        .find(|line| line.starts_with("actormesh = "))
        .unwrap_or_else(|| panic!("no actormesh dependency in:\n{manifest}"))
        .to_owned()
}

/// A started binary: its output lines arrive on `lines`, its exit on `exit`.
struct Running {
    pid: u32,
    name: String,
    lines: Receiver<String>,
    exit: Receiver<std::io::Result<ExitStatus>>,
    seen: Vec<String>,
    exited: bool,
}

impl Running {
    fn start(binary: &Path, args: &[&str]) -> Running {
        let mut child = Command::new(binary)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("ACTORMESH_ETCD")
            .env_remove("LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let (line_tx, lines) = mpsc::channel();
        forward_lines(child.stdout.take().expect("piped stdout"), line_tx.clone());
        forward_lines(child.stderr.take().expect("piped stderr"), line_tx);
        let pid = child.id();
        let (exit_tx, exit) = mpsc::channel();
        thread::spawn(move || {
            let _ = exit_tx.send(child.wait());
        });
        Running {
            pid,
            name: format!("{} {}", binary.display(), args.join(" ")),
            lines,
            exit,
            seen: Vec::new(),
            exited: false,
        }
    }

    /// What the binary wrote so far (stdout and stderr, interleaved as read).
    fn output(&mut self) -> String {
        self.seen.extend(self.lines.try_iter());
        self.seen.join("\n")
    }

    /// Waits, up to `limit`, for a line containing `wanted`.
    fn wait_for_line(&mut self, wanted: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(wanted);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("did not print `{wanted}` within {limit:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait(RUN_LIMIT);
                    self.fail(&format!("exited ({status}) without printing `{wanted}`"))
                }
            }
        }
    }

    /// Waits, up to `limit`, for the binary to exit.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        match self.exit.recv_timeout(limit) {
            Ok(status) => {
                self.exited = true;
                status.expect("wait for the binary")
            }
            Err(_) => self.fail(&format!("did not exit within {limit:?}")),
        }
    }

    /// Fails the test: the binary `did` something wrong; shows its output.
    fn fail(&mut self, did: &str) -> ! {
        let output = self.output();
        panic!("`{}` {did}; its output:\n{output}", self.name)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {} failed", self.pid);
    }
}

impl Drop for Running {
    /// A binary the test gave up on is killed, not left running.
    fn drop(&mut self) {
        if !self.exited && self.exit.try_recv().is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

/// Sends every line read from `from` to `to`, from a thread of its own.
fn forward_lines(from: impl Read + Send + 'static, to: mpsc::Sender<String>) {
    thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if to.send(line).is_err() {
                break;
            }
        }
    });
}

#[test]
fn service_template_renders_builds_passes_lints_and_serves() {
    let root = workspace_root();
    let template = root.join("service-template");
    let render = root.join("target").join("template-render");
    let target_dir = root.join("target").join("template-build");

    let used = for_each_text_file(&template, &mut check_template_tags);
    assert!(used >= 4, "only {used} template files");

    let framework = root.join("framework");
    // A TOML literal string: no escaping needed for the path.
    let dependency = format!("{{ path = '{}' }}", framework.display());
    let project = generate(&template, &render, Some(&dependency));
    let rendered = for_each_text_file(&project, &mut check_rendered);
    assert!(rendered >= 3, "only {rendered} files rendered");
    assert_eq!(
        actormesh_line(&project),
        format!("actormesh = {dependency}")
    );
    for hook in ["cargo-generate.toml", "actormesh-dependency.rhai"] {
        assert!(
            !project.join(hook).exists(),
            "{hook} is not part of the generated project"
        );
    }
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
    for features in [&[][..], &["--features", "etcd"][..]] {
        let mut args = vec!["clippy", "--all-targets"];
        args.extend_from_slice(features);
        args.extend_from_slice(&["--", "-D", "warnings"]);
        run(
            &format!("cargo {}", args.join(" ")),
            cargo(&project, &target_dir, &args),
        );
    }
    run("cargo build", cargo(&project, &target_dir, &["build"]));
    let binary = target_dir
        .join("debug")
        .join(format!("{PROJECT_NAME}{}", std::env::consts::EXE_SUFFIX));

    let mut self_check = Running::start(&binary, &["--self-check"]);
    let status = self_check.wait(RUN_LIMIT);
    let output = self_check.output();
    assert!(
        status.success(),
        "the self-check failed ({status}):\n{output}"
    );
    assert!(
        output.contains("self-check passed: hello, self-check"),
        "unexpected output of the self-check:\n{output}"
    );

    let mut service = Running::start(&binary, &[]);
    service.wait_for_line(READY, READY_LIMIT);
    service.signal("-TERM");
    let status = service.wait(RUN_LIMIT);
    let output = service.output();
    assert!(
        status.success(),
        "the service did not exit 0 after SIGTERM ({status}):\n{output}"
    );
    assert!(
        output.contains("cause=Terminate") && output.contains("stopped"),
        "the service did not report its shutdown:\n{output}"
    );
}

#[test]
fn the_default_dependency_is_the_framework_where_the_project_is_generated() {
    let root = workspace_root();
    let destination = root.join("target").join("template-render-default");
    let project = generate(&root.join("service-template"), &destination, None);
    // cargo-generate writes the absolute, canonical path.
    let framework = fs::canonicalize(&destination)
        .expect("the destination exists")
        .join("framework");
    assert_eq!(
        actormesh_line(&project),
        format!("actormesh = {{ path = \"{}\" }}", framework.display())
    );
}

#[test]
fn template_tags_are_found_with_their_lines() {
    let tags = template_tags("a = 1\nname = \"{{project-name}}\"\n{% if x %}\n{{ crate_name }}");
    assert_eq!(
        tags,
        vec![
            (2, "{{project-name}}".to_owned()),
            (4, "{{ crate_name }}".to_owned()),
            (3, "{% if x %}".to_owned()),
        ]
    );
    check_template_tags(Path::new("x"), "{{project-name}} {{ crate_name }}");
}

#[test]
#[should_panic(expected = "may only use the placeholders")]
fn unknown_placeholders_are_refused() {
    check_template_tags(Path::new("x"), "a = {{unknown}}\n");
}

#[test]
#[should_panic(expected = "template syntax `{% raw %}` left after rendering")]
fn template_syntax_left_after_rendering_is_refused() {
    check_rendered(Path::new("x"), "a = 1\n{% raw %}\n");
}
