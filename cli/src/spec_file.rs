//! Spec files: a [`GroupSpec`] in TOML or JSON (the format chosen by the file's extension),
//! with errors that name the bad field. The fields and the forms of the constructor
//! arguments are described in the [crate docs](crate#spec-files-deploy).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use actormesh::{Autoscale, GroupSpec, PlacementPolicy};
use serde::{Deserialize, Serialize};

/// A spec file's contents: a [`GroupSpec`] with the constructor arguments in a form a person
/// can write (see the [crate docs](crate#spec-files-deploy)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    /// The group the replicas join.
    pub group: String,
    /// The Spawnable actor type (its stable name).
    pub actor_type: String,
    /// How many replicas should run (default 1; a singleton: 1; with autoscale: its `min`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Where new replicas go (default `round_robin`).
    #[serde(default)]
    pub placement: PlacementPolicy,
    /// Only nodes with every one of these labels run replicas.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// Spread replicas across the values of this node label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<String>,
    /// At most this many replicas on one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_node: Option<u32>,
    /// At most one live instance cluster-wide.
    #[serde(default, skip_serializing_if = "is_false")]
    pub singleton: bool,
    /// Let the controller choose the replicas from the load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleFile>,
    /// The constructor arguments: the encoding of this `String`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_string: Option<String>,
    /// The constructor arguments: these encoded bytes, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_hex: Option<String>,
    /// The constructor arguments: these encoded bytes (as stored in etcd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<u8>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The `[autoscale]` table of a spec file (see [`Autoscale`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleFile {
    /// Never fewer replicas.
    pub min: u32,
    /// Never more replicas.
    pub max: u32,
    /// The asks in flight per replica to aim for.
    pub target_per_replica: f64,
    /// Act only beyond this fraction of the target either way (default 0.25).
    #[serde(default = "default_hysteresis")]
    pub hysteresis: f64,
    /// At least this long between two changes, in milliseconds (default 5000).
    #[serde(default = "default_cooldown_ms")]
    pub cooldown_ms: u64,
}

fn default_hysteresis() -> f64 {
    0.25
}

fn default_cooldown_ms() -> u64 {
    5_000
}

/// The format of a spec file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.toml`.
    Toml,
    /// `.json`.
    Json,
}

impl Format {
    /// The format of `path`, by its extension.
    pub fn of(path: &Path) -> Result<Format, SpecError> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("toml") => Ok(Format::Toml),
            Some("json") => Ok(Format::Json),
            _ => Err(SpecError {
                field: None,
                message: "the spec file's extension must be .toml or .json".to_owned(),
            }),
        }
    }
}

/// What is wrong with a spec file: the field (a path such as `autoscale.min`) when one is to
/// blame, and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The field at fault, if one is.
    pub field: Option<String>,
    /// What is wrong (with its line and column where the parser knows them).
    pub message: String,
}

impl SpecError {
    fn field(field: &str, message: impl Into<String>) -> Self {
        SpecError {
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "field `{field}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for SpecError {}

/// Reads the spec file at `path` (format by extension).
pub fn load(path: &Path) -> Result<GroupSpec, SpecError> {
    let format = Format::of(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| SpecError {
        field: None,
        message: format!("cannot read it: {e}"),
    })?;
    parse(&text, format)
}

/// Parses and checks a spec file's `text`.
pub fn parse(text: &str, format: Format) -> Result<GroupSpec, SpecError> {
    let file: SpecFile = match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                path_error(&path, inner.to_string())
            })?
        }
        Format::Toml => {
            let de = toml::Deserializer::parse(text).map_err(|e| SpecError {
                field: None,
                message: toml_message(text, &e),
            })?;
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                path_error(&path, toml_message(text, e.inner()))
            })?
        }
    };
    file.into_spec()
}

/// An error at `path` (serde_path_to_error's; `.` is the document itself: the message then
/// names the field, as in "missing field `group`").
fn path_error(path: &str, message: String) -> SpecError {
    if path == "." || path.is_empty() {
        SpecError {
            field: None,
            message,
        }
    } else {
        SpecError::field(path, message)
    }
}

/// A toml error as one line: its message and where (line and column).
fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("{message} (line {line}, column {column})")
        }
        None => message,
    }
}

/// The 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl SpecFile {
    /// Checks the file and builds the spec.
    pub fn into_spec(self) -> Result<GroupSpec, SpecError> {
        for (field, value) in [("group", &self.group), ("actor_type", &self.actor_type)] {
            if value.trim().is_empty() {
                return Err(SpecError::field(field, "must not be empty"));
            }
        }
        if self.group.contains('/') {
            return Err(SpecError::field(
                "group",
                format!("`{}` contains '/', which etcd keys cannot hold", self.group),
            ));
        }
        let given: Vec<&str> = [
            ("args_string", self.args_string.is_some()),
            ("args_hex", self.args_hex.is_some()),
            ("args", self.args.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if given.len() > 1 {
            return Err(SpecError::field(
                given[1],
                format!(
                    "give the constructor arguments one way only (found {})",
                    given.join(" and ")
                ),
            ));
        }
        let args = if let Some(text) = &self.args_string {
            GroupSpec::encode_args(text)
                .map_err(|e| SpecError::field("args_string", e.to_string()))?
        } else if let Some(hex) = &self.args_hex {
            from_hex(hex).map_err(|m| SpecError::field("args_hex", m))?
        } else if let Some(bytes) = &self.args {
            bytes.clone()
        } else {
            GroupSpec::encode_args(&()).map_err(|e| SpecError::field("args", e.to_string()))?
        };
        let autoscale = match &self.autoscale {
            None => None,
            Some(a) => Some(a.check()?),
        };
        if self.max_per_node == Some(0) {
            return Err(SpecError::field(
                "max_per_node",
                "0 would forbid every node; leave it out for no limit",
            ));
        }
        let replicas = match self.replicas {
            Some(n) => n,
            None if self.singleton => 1,
            None => autoscale.as_ref().map_or(1, |a| a.min),
        };
        if self.singleton && replicas > 1 {
            return Err(SpecError::field(
                "replicas",
                format!("a singleton runs at most one replica, not {replicas}"),
            ));
        }
        if let PlacementPolicy::Custom(name) = &self.placement {
            if name.trim().is_empty() {
                return Err(SpecError::field(
                    "placement.custom",
                    "name the custom policy",
                ));
            }
        }
        Ok(GroupSpec {
            group: self.group,
            actor_type: self.actor_type,
            args,
            replicas,
            placement: self.placement,
            selector: self.selector,
            anti_affinity: self.anti_affinity,
            max_per_node: self.max_per_node,
            singleton: self.singleton,
            autoscale,
        })
    }

    /// The file form of a stored spec (arguments in hex, none when they are empty): what
    /// `specs --json` prints, deployable as it is.
    pub fn from_spec(spec: &GroupSpec) -> SpecFile {
        SpecFile {
            group: spec.group.clone(),
            actor_type: spec.actor_type.clone(),
            replicas: Some(spec.replicas),
            placement: spec.placement.clone(),
            selector: spec.selector.clone(),
            anti_affinity: spec.anti_affinity.clone(),
            max_per_node: spec.max_per_node,
            singleton: spec.singleton,
            autoscale: spec.autoscale.map(|a| AutoscaleFile {
                min: a.min,
                max: a.max,
                target_per_replica: a.target_per_replica,
                hysteresis: a.hysteresis,
                cooldown_ms: a.cooldown_ms,
            }),
            args_string: None,
            args_hex: (!spec.args.is_empty()).then(|| to_hex(&spec.args)),
            args: None,
        }
    }
}

impl AutoscaleFile {
    fn check(&self) -> Result<Autoscale, SpecError> {
        if self.max < self.min {
            return Err(SpecError::field(
                "autoscale.max",
                format!("{} is below autoscale.min ({})", self.max, self.min),
            ));
        }
        if !(self.target_per_replica.is_finite() && self.target_per_replica > 0.0) {
            return Err(SpecError::field(
                "autoscale.target_per_replica",
                "must be a number above 0",
            ));
        }
        if !(self.hysteresis.is_finite() && self.hysteresis >= 0.0) {
            return Err(SpecError::field(
                "autoscale.hysteresis",
                "must be a number of at least 0",
            ));
        }
        Ok(Autoscale {
            min: self.min,
            max: self.max,
            target_per_replica: self.target_per_replica,
            hysteresis: self.hysteresis,
            cooldown_ms: self.cooldown_ms,
        })
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string (whitespace allowed between byte pairs, an optional `0x`).
pub fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: String = text.split_whitespace().collect();
    let digits = digits.strip_prefix("0x").unwrap_or(&digits);
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "{} hex digits: an even number is needed",
            digits.len()
        ));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            let pair = digits.get(i..i + 2).ok_or("not ASCII hex")?;
            u8::from_str_radix(pair, 16).map_err(|_| format!("`{pair}` is not a hex byte"))
        })
        .collect::<Result<Vec<u8>, String>>()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml(text: &str) -> Result<GroupSpec, SpecError> {
        parse(text, Format::Toml)
    }

    fn json(text: &str) -> Result<GroupSpec, SpecError> {
        parse(text, Format::Json)
    }

    #[test]
    fn a_full_toml_file() {
        let spec = toml(
            r#"
group = "replicas"
actor_type = "cluster.Replica"
replicas = 3
placement = "spread"
selector = { role = "replica" }
anti_affinity = "zone"
max_per_node = 2
args_string = "tag"

[autoscale]
min = 1
max = 6
target_per_replica = 10.0
"#,
        )
        .unwrap();
        assert_eq!(spec.group, "replicas");
        assert_eq!(spec.actor_type, "cluster.Replica");
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.placement, PlacementPolicy::Spread);
        assert_eq!(spec.selector["role"], "replica");
        assert_eq!(spec.anti_affinity.as_deref(), Some("zone"));
        assert_eq!(spec.max_per_node, Some(2));
        assert!(!spec.singleton);
        assert_eq!(spec.args, GroupSpec::encode_args("tag").unwrap());
        assert_eq!(spec.args, b"\x03tag", "a varint length, then the bytes");
        let a = spec.autoscale.unwrap();
        assert_eq!((a.min, a.max, a.target_per_replica), (1, 6, 10.0));
        assert_eq!((a.hysteresis, a.cooldown_ms), (0.25, 5_000), "the defaults");
    }

    #[test]
    fn a_minimal_file_gets_the_defaults_and_the_encoding_of_unit() {
        for spec in [
            toml("group = \"g\"\nactor_type = \"t\"\n").unwrap(),
            json(r#"{"group": "g", "actor_type": "t"}"#).unwrap(),
        ] {
            assert_eq!(spec.replicas, 1);
            assert_eq!(spec.placement, PlacementPolicy::RoundRobin);
            assert!(spec.selector.is_empty());
            assert_eq!(spec.args, GroupSpec::encode_args(&()).unwrap());
            assert!(spec.args.is_empty());
            assert_eq!(spec.autoscale, None);
        }
        let singleton = toml("group = \"g\"\nactor_type = \"t\"\nsingleton = true\n").unwrap();
        assert_eq!((singleton.replicas, singleton.singleton), (1, true));
        let scaled = json(
            r#"{"group":"g","actor_type":"t","autoscale":{"min":2,"max":4,"target_per_replica":5}}"#,
        )
        .unwrap();
        assert_eq!(scaled.replicas, 2, "autoscale starts at its min");
    }

    #[test]
    fn json_with_every_form_of_arguments_and_a_custom_placement() {
        let spec = json(
            r#"{"group":"g","actor_type":"t","args_hex":"03 74 61 67","placement":{"custom":"mine"}}"#,
        )
        .unwrap();
        assert_eq!(spec.args, b"\x03tag");
        assert_eq!(spec.placement, PlacementPolicy::Custom("mine".into()));
        let spec = json(r#"{"group":"g","actor_type":"t","args":[3,116,97,103]}"#).unwrap();
        assert_eq!(spec.args, b"\x03tag");
        let spec =
            toml("group = \"g\"\nactor_type = \"t\"\nplacement = { custom = \"mine\" }\n").unwrap();
        assert_eq!(spec.placement, PlacementPolicy::Custom("mine".into()));
    }

    #[test]
    fn a_stored_spec_round_trips_through_the_file_form() {
        let spec = json(
            r#"{"group":"g","actor_type":"t","replicas":4,"args_string":"x","singleton":false,
                "selector":{"zone":"a"},"autoscale":{"min":1,"max":8,"target_per_replica":2.5,"hysteresis":0.1,"cooldown_ms":100}}"#,
        )
        .unwrap();
        let file = SpecFile::from_spec(&spec);
        assert_eq!(file.args_hex.as_deref(), Some("0178"));
        let text = serde_json::to_string(&file).unwrap();
        assert_eq!(json(&text).unwrap(), spec, "{text}");
        let text = toml::to_string(&file).unwrap();
        assert_eq!(toml(&text).unwrap(), spec, "{text}");
        let no_args = json(r#"{"group":"g","actor_type":"t"}"#).unwrap();
        let file = SpecFile::from_spec(&no_args);
        assert_eq!(file.args_hex, None, "empty arguments are left out");
        assert_eq!(
            json(&serde_json::to_string(&file).unwrap()).unwrap(),
            no_args
        );
    }

    /// The error's text, which must name `field`.
    fn names(err: SpecError, field: &str) -> String {
        let text = err.to_string();
        assert!(
            text.contains(&format!("`{field}`")),
            "{text} names `{field}`"
        );
        text
    }

    #[test]
    fn toml_errors_name_the_field_and_the_line() {
        let text = names(
            toml("group = \"g\"\nactor_type = \"t\"\nreplicas = \"three\"\n").unwrap_err(),
            "replicas",
        );
        assert!(text.contains("line 3"), "{text}");
        let err = toml("group = \"g\"\nactor_type = \"t\"\nreplica = 3\n").unwrap_err();
        let text = names(err, "replica");
        assert!(text.contains("unknown field"), "{text}");
        names(toml("actor_type = \"t\"\n").unwrap_err(), "group");
        let err = toml("group = \"g\"\nactor_type = \"t\"\n[autoscale]\nmin = 1\nmax = -2\ntarget_per_replica = 1.0\n")
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("autoscale.max"), "{err}");
        let err = toml("group = \"g\"\nactor_type = \"t\"\nplacement = \"nearest\"\n").unwrap_err();
        names(err, "placement");
        let err = toml("group = \"g\"\nactor_type = \"t\"\nselector = { zone = 1 }\n").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("selector.zone"), "{err}");
        let err = toml("group = \"g\nactor_type = \"t\"\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "a syntax error: {err}");
    }

    #[test]
    fn json_errors_name_the_field() {
        let err = json(r#"{"group":"g","actor_type":"t","replicas":-1}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("replicas"), "{err}");
        let err =
            json(r#"{"group":"g","actor_type":"t","autoscale":{"min":1,"max":2}}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("autoscale"), "{err}");
        assert!(err.to_string().contains("target_per_replica"), "{err}");
        let err = json(r#"{"group":"g","actor_type":"t","max_per_node":"2"}"#).unwrap_err();
        names(err, "max_per_node");
        names(json(r#"{"group":"g"}"#).unwrap_err(), "actor_type");
        let err = json(r#"{"group":"g","actor_type":"t","singletn":true}"#).unwrap_err();
        names(err, "singletn");
        assert!(json("{").is_err());
    }

    #[test]
    fn checks_after_parsing_name_the_field() {
        let err = json(r#"{"group":"a/b","actor_type":"t"}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("group"));
        let err = json(r#"{"group":" ","actor_type":"t"}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("group"));
        let err = json(r#"{"group":"g","actor_type":""}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("actor_type"));
        let err = json(r#"{"group":"g","actor_type":"t","args_string":"x","args_hex":"00"}"#)
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("args_hex"), "{err}");
        assert!(
            err.to_string().contains("args_string and args_hex"),
            "{err}"
        );
        let err = json(r#"{"group":"g","actor_type":"t","args_hex":"abc"}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("args_hex"), "{err}");
        let err = json(r#"{"group":"g","actor_type":"t","args_hex":"zz"}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("args_hex"), "{err}");
        let err =
            json(r#"{"group":"g","actor_type":"t","singleton":true,"replicas":2}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("replicas"), "{err}");
        let err = json(r#"{"group":"g","actor_type":"t","max_per_node":0}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("max_per_node"), "{err}");
        let err = json(
            r#"{"group":"g","actor_type":"t","autoscale":{"min":3,"max":2,"target_per_replica":1}}"#,
        )
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("autoscale.max"), "{err}");
        let err = json(
            r#"{"group":"g","actor_type":"t","autoscale":{"min":1,"max":2,"target_per_replica":0}}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.field.as_deref(),
            Some("autoscale.target_per_replica"),
            "{err}"
        );
    }

    #[test]
    fn the_format_comes_from_the_extension_and_files_are_read() {
        assert_eq!(Format::of(Path::new("a/spec.toml")).unwrap(), Format::Toml);
        assert_eq!(Format::of(Path::new("spec.JSON")).unwrap(), Format::Json);
        assert!(Format::of(Path::new("spec.yaml")).is_err());
        assert!(Format::of(Path::new("spec")).is_err());
        let dir = std::env::temp_dir().join(format!("actormesh-cli-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("g.toml");
        std::fs::write(&path, "group = \"g\"\nactor_type = \"t\"\nreplicas = 2\n").unwrap();
        assert_eq!(load(&path).unwrap().replicas, 2);
        let missing = load(&dir.join("missing.json")).unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hex_both_ways() {
        assert_eq!(to_hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(from_hex("00ab10").unwrap(), [0, 0xab, 0x10]);
        assert_eq!(from_hex("0x00 AB 10").unwrap(), [0, 0xab, 0x10]);
        assert_eq!(from_hex("").unwrap(), Vec::<u8>::new());
        assert!(from_hex("0").is_err());
        assert!(from_hex("g0").is_err());
        assert!(from_hex("é0").is_err());
    }
}
