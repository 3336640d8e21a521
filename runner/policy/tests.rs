use std::path::Path;

use super::*;

fn parse_ok(text: &str) -> Policy {
    match parse(Path::new("policy.yml"), text) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn parse_err(text: &str) -> String {
    match parse(Path::new("policy.yml"), text) {
        Ok(p) => panic!("expected an error, got {p:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn builtin_policy_parses_and_is_offline() {
    let policy = match Policy::builtin() {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let tests = policy.for_stage("tests");
    assert_eq!(tests.network, Network::None);
    assert_eq!(tests.sandbox, SandboxMode::Enforce);
    assert!(tests.write.contains(&PathGrant::Root(NamedRoot::Repo)));
    assert!(tests.deny.contains(&PathGrant::Path("~/.ssh".into())));
}

#[test]
fn stage_overrides_add_lists_and_replace_network_and_limits() {
    let policy = parse_ok(
        "defaults:\n  filesystem:\n    read: [system]\n  env: [PATH]\n  limits:\n    memory_mb: 100\n    processes: 10\nstages:\n  deploy_setup:\n    network: [\"*.example.com:443\", localhost]\n    env: [KUBECONFIG]\n    filesystem:\n      read: [~/.kube]\n    limits:\n      memory_mb: 200\n",
    );
    let deploy = policy.for_stage("deploy_setup");
    assert_eq!(
        deploy.env,
        vec!["PATH".to_string(), "KUBECONFIG".to_string()]
    );
    assert_eq!(
        deploy.read,
        vec![
            PathGrant::Root(NamedRoot::System),
            PathGrant::Path("~/.kube".into())
        ]
    );
    assert_eq!(deploy.limits.memory_mb, Some(200));
    assert_eq!(deploy.limits.processes, Some(10));
    let Network::Hosts(hosts) = &deploy.network else {
        panic!("expected hosts, got {:?}", deploy.network)
    };
    assert!(hosts[0].allows("pypi.example.com", 443));
    assert!(!hosts[0].allows("example.com", 443));
    assert!(!hosts[0].allows("a.example.com", 80));
    assert!(hosts[1].allows("LOCALHOST", 8080));
    assert_eq!(policy.for_stage("tests").network, Network::None);
}

#[test]
fn errors_name_line_column_and_field() {
    assert_eq!(
        parse_err("defaults:\n  network: some\n"),
        "policy.yml:2:12: defaults.network must be `none`, `all` or a list of host[:port], got `some`"
    );
    assert_eq!(
        parse_err("stages:\n  testz:\n    network: all\n"),
        "policy.yml:2:3: stages.testz is not a stage; stages are auth, tests, deploy_setup, deploy_health, deploy_teardown, benchmark, actions"
    );
    assert_eq!(
        parse_err("defaults:\n  filesystem:\n    raed: [repo]\n"),
        "policy.yml:3:5: defaults.filesystem.raed is not a known key"
    );
    assert_eq!(
        parse_err("defaults:\n  filesystem:\n    read: [relative/path]\n"),
        "policy.yml:3:12: defaults.filesystem.read[0] must be a named root (system, toolchains, repo, tmp, artifacts), an absolute path or ~/path; got `relative/path`"
    );
    assert_eq!(
        parse_err("defaults:\n  limits:\n    memory_mb: 0\n"),
        "policy.yml:3:16: defaults.limits.memory_mb must be a whole number >= 1, got `0`"
    );
    assert_eq!(
        parse_err("defaults:\n  network: [\"bad host\"]\n"),
        "policy.yml:2:13: defaults.network[0] must be host[:port] or *.domain[:port], got `bad host`"
    );
    assert_eq!(
        parse_err("sandbox: maybe\n"),
        "policy.yml:1:10: sandbox must be `enforce` or `off`, got `maybe`"
    );
}

#[test]
fn secrets_pass_only_by_exact_name() {
    let patterns = vec![
        "AWS_*".to_string(),
        "PATH".to_string(),
        "MY_API_TOKEN".to_string(),
    ];
    assert!(env_allowed(&patterns, "AWS_REGION"));
    assert!(!env_allowed(&patterns, "AWS_SECRET_ACCESS_KEY"));
    assert!(env_allowed(&patterns, "MY_API_TOKEN"));
    assert!(!env_allowed(&patterns, "OTHER_TOKEN"));
    assert!(!env_allowed(&["OPENAI_*".to_string()], "OPENAI_API_KEY"));
    assert!(env_allowed(&["OPENAI_*".to_string()], "OPENAI_API_BASE"));
    assert!(is_secret_name("db_password"));
}

#[test]
fn every_example_policy_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("policy-") && name.ends_with(".yml") {
            let loaded = Policy::load(&entry.path());
            assert!(loaded.is_ok(), "{name}: {:?}", loaded.err());
            seen += 1;
        }
    }
    assert!(seen >= 3, "expected the example policies, found {seen}");
}
