//! A catalogue of invalid manifests: the API server must refuse each one with a message that
//! says what is wrong, before toma ever sees it.

use toma_testkit::{Env, apply, kubectl};

struct Case {
    name: &'static str,
    manifest: String,
    expected: &'static str,
}

fn credential(ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: toma.dev/v1alpha1\nkind: TurnCredential\nmetadata: {{name: bad, namespace: {ns}}}\n{spec}\n"
    )
}

fn cluster_key(ns: &str, spec: &str) -> String {
    format!("apiVersion: toma.dev/v1alpha1\nkind: ClusterTurnKey\nmetadata: {{name: bad-{ns}}}\n{spec}\n")
}

fn turn_key(ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: toma.dev/v1alpha1\nkind: TurnKey\nmetadata: {{name: bad, namespace: {ns}}}\n{spec}\n"
    )
}

fn catalogue(ns: &str) -> Vec<Case> {
    let key = "  keyRef: {name: k}";
    let cf = |extra: &str| {
        format!("spec:\n  cloudflare: {{keyId: abc, apiTokenSecretRef: {{name: s, key: k{extra}}}}}")
    };
    let ss = |extra: &str, urls: &str| {
        format!("spec:\n  sharedSecret: {{secretRef: {{name: s, key: k{extra}}}, urls: {urls}}}")
    };
    let long = "x".repeat(300);
    let c = |name, manifest, expected| Case {
        name,
        manifest,
        expected,
    };
    vec![
        c(
            "ttl below 60",
            credential(ns, &format!("spec:\n{key}\n  ttlSeconds: 30")),
            "greater than or equal to 60",
        ),
        c(
            "ttl zero",
            credential(ns, &format!("spec:\n{key}\n  ttlSeconds: 0")),
            "greater than or equal to 60",
        ),
        c(
            "ttl negative",
            credential(ns, &format!("spec:\n{key}\n  ttlSeconds: -5")),
            "greater than or equal to 60",
        ),
        c(
            "ttl above 48 h",
            credential(ns, &format!("spec:\n{key}\n  ttlSeconds: 172801")),
            "less than or equal to 172800",
        ),
        c(
            "ttl not a number",
            credential(ns, &format!("spec:\n{key}\n  ttlSeconds: soon")),
            "spec.ttlSeconds",
        ),
        c(
            "renewBefore equal to ttl",
            credential(
                ns,
                &format!("spec:\n{key}\n  ttlSeconds: 600\n  renewBeforeSeconds: 600"),
            ),
            "spec.renewBeforeSeconds must be less than spec.ttlSeconds",
        ),
        c(
            "renewBefore above ttl",
            credential(
                ns,
                &format!("spec:\n{key}\n  ttlSeconds: 600\n  renewBeforeSeconds: 9000"),
            ),
            "spec.renewBeforeSeconds must be less than spec.ttlSeconds",
        ),
        c(
            "renewBefore above the default ttl",
            credential(ns, &format!("spec:\n{key}\n  renewBeforeSeconds: 86400")),
            "spec.renewBeforeSeconds must be less than spec.ttlSeconds",
        ),
        c(
            "renewBefore zero",
            credential(ns, &format!("spec:\n{key}\n  renewBeforeSeconds: 0")),
            "greater than or equal to 1",
        ),
        c("no spec", credential(ns, ""), "spec: Required value"),
        c(
            "no keyRef",
            credential(ns, "spec:\n  ttlSeconds: 600"),
            "spec.keyRef: Required value",
        ),
        c(
            "keyRef without name",
            credential(ns, "spec:\n  keyRef: {kind: TurnKey}"),
            "spec.keyRef.name: Required value",
        ),
        c(
            "keyRef with empty name",
            credential(ns, "spec:\n  keyRef: {name: ''}"),
            "spec.keyRef.name",
        ),
        c(
            "keyRef of another kind",
            credential(ns, "spec:\n  keyRef: {kind: Secret, name: k}"),
            "Unsupported value: \"Secret\"",
        ),
        c(
            "empty secretName",
            credential(ns, &format!("spec:\n{key}\n  secretName: ''")),
            "spec.secretName",
        ),
        c(
            "secretName too long",
            credential(ns, &format!("spec:\n{key}\n  secretName: {}", "s".repeat(254))),
            "spec.secretName",
        ),
        c(
            "secretName that is no DNS name",
            credential(ns, &format!("spec:\n{key}\n  secretName: Web_Ice")),
            "spec.secretName in body should match",
        ),
        c(
            "keyRef name that is no DNS name",
            credential(ns, "spec:\n  keyRef: {name: 'Cloud Flare'}"),
            "spec.keyRef.name in body should match",
        ),
        c(
            "unknown URL profile",
            credential(ns, &format!("spec:\n{key}\n  urlFilter: {{profile: tiny}}")),
            "Unsupported value: \"tiny\"",
        ),
        c(
            "excluded port zero",
            credential(ns, &format!("spec:\n{key}\n  urlFilter: {{excludePorts: [0]}}")),
            "greater than or equal to 1",
        ),
        c(
            "unknown transport",
            credential(ns, &format!("spec:\n{key}\n  urlFilter: {{transports: [quic]}}")),
            "Unsupported value: \"quic\"",
        ),
        c(
            "excluded port out of range",
            credential(
                ns,
                &format!("spec:\n{key}\n  urlFilter: {{excludePorts: [70000]}}"),
            ),
            "less than or equal to 65535",
        ),
        c(
            "restart target of an unknown kind",
            credential(
                ns,
                &format!("spec:\n{key}\n  rolloutRestartTargets: [{{kind: Pod, name: p}}]"),
            ),
            "Unsupported value: \"Pod\"",
        ),
        c(
            "restart target without name",
            credential(
                ns,
                &format!("spec:\n{key}\n  rolloutRestartTargets: [{{kind: Deployment}}]"),
            ),
            "Required value",
        ),
        c(
            "too many restart targets",
            credential(
                ns,
                &format!(
                    "spec:\n{key}\n  rolloutRestartTargets: [{}]",
                    (0..17)
                        .map(|i| format!("{{kind: Deployment, name: d{i}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            "must have at most 16 items",
        ),
        c(
            "empty customIdentifier",
            credential(ns, &format!("spec:\n{key}\n  customIdentifier: ''")),
            "spec.customIdentifier",
        ),
        c(
            "customIdentifier too long",
            credential(ns, &format!("spec:\n{key}\n  customIdentifier: {long}")),
            "spec.customIdentifier",
        ),
        c(
            "revokeOnDelete not a boolean",
            credential(ns, &format!("spec:\n{key}\n  revokeOnDelete: maybe")),
            "spec.revokeOnDelete",
        ),
        c(
            "cluster key with two providers",
            cluster_key(
                ns,
                &format!(
                    "{}\n{}",
                    cf(", namespace: x"),
                    ss(", namespace: x", "['turn:t']").replace("spec:\n", "")
                ),
            ),
            "exactly one provider block is required",
        ),
        c(
            "cluster key without provider",
            cluster_key(ns, "spec: {}"),
            "exactly one provider block is required",
        ),
        c(
            "cluster key without spec",
            cluster_key(ns, ""),
            "spec: Required value",
        ),
        c(
            "cluster key token without namespace",
            cluster_key(ns, &cf("")),
            "must name the namespace of its Secret",
        ),
        c(
            "cluster key shared secret without namespace",
            cluster_key(ns, &ss("", "['turn:t:3478']")),
            "must name the namespace of its Secret",
        ),
        c(
            "namespaceSelector with an unknown operator",
            cluster_key(
                ns,
                &format!(
                    "{}\n  namespaceSelector: {{matchExpressions: [{{key: team, operator: Is, values: [a]}}]}}",
                    cf(", namespace: x")
                ),
            ),
            "namespaceSelector matchExpressions: operator must be In or NotIn with values",
        ),
        c(
            "namespaceSelector In without values",
            cluster_key(
                ns,
                &format!(
                    "{}\n  namespaceSelector: {{matchExpressions: [{{key: team, operator: In}}]}}",
                    cf(", namespace: x")
                ),
            ),
            "namespaceSelector matchExpressions: operator must be In or NotIn with values",
        ),
        c(
            "namespaceSelector matchLabels not a map",
            cluster_key(
                ns,
                &format!(
                    "{}\n  namespaceSelector: {{matchLabels: [team]}}",
                    cf(", namespace: x")
                ),
            ),
            "namespaceSelector.matchLabels: Invalid value: \"array\"",
        ),
        c(
            "cloudflare without keyId",
            cluster_key(
                ns,
                "spec:\n  cloudflare: {apiTokenSecretRef: {name: s, key: k, namespace: x}}",
            ),
            "spec.cloudflare.keyId: Required value",
        ),
        c(
            "keyId with a slash",
            cluster_key(
                ns,
                "spec:\n  cloudflare: {keyId: 'a/b', apiTokenSecretRef: {name: s, key: k, namespace: x}}",
            ),
            "spec.cloudflare.keyId",
        ),
        c(
            "cloudflare without token",
            cluster_key(ns, "spec:\n  cloudflare: {keyId: abc}"),
            "spec.cloudflare.apiTokenSecretRef: Required value",
        ),
        c(
            "token ref without key",
            cluster_key(
                ns,
                "spec:\n  cloudflare: {keyId: abc, apiTokenSecretRef: {name: s, namespace: x}}",
            ),
            "spec.cloudflare.apiTokenSecretRef.key: Required value",
        ),
        c(
            "baseUrl that is not http",
            cluster_key(
                ns,
                "spec:\n  cloudflare: {keyId: abc, apiTokenSecretRef: {name: s, key: k, namespace: x}, baseUrl: 'ftp://x'}",
            ),
            "baseUrl must be an http(s) URL",
        ),
        c(
            "shared secret without urls",
            cluster_key(ns, &ss(", namespace: x", "[]")),
            "spec.sharedSecret.urls",
        ),
        c(
            "shared secret with a non-TURN url",
            cluster_key(ns, &ss(", namespace: x", "['http://turn.example.com']")),
            "urls must start with turn:, turns: or stun:",
        ),
        c(
            "turn key with a token namespace",
            turn_key(ns, &cf(", namespace: x")),
            "a TurnKey reads Secrets from its own namespace",
        ),
        c(
            "turn key with a shared-secret namespace",
            turn_key(ns, &ss(", namespace: x", "['turn:t']")),
            "a TurnKey reads Secrets from its own namespace",
        ),
        c(
            "turn key without provider",
            turn_key(ns, "spec: {}"),
            "exactly one provider block is required",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn invalid_manifests_are_rejected_by_the_api_server_with_a_readable_message() {
    let env = Env::without_toma("invalid").await;
    let cases = catalogue(&env.namespace);
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for case in &cases {
        match kubectl(&["apply", "-f", "-"], Some(&case.manifest)) {
            Ok(_) => failures.push(format!("{}: accepted\n{}", case.name, case.manifest)),
            Err(error) if !error.contains(case.expected) => failures.push(format!(
                "{}: expected {:?} in: {}",
                case.name,
                case.expected,
                error.trim()
            )),
            Err(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    apply(&credential(
        &env.namespace,
        "spec:\n  keyRef: {name: k}\n  secretName: one",
    ));
    let changed = credential(&env.namespace, "spec:\n  keyRef: {name: k}\n  secretName: two");
    let error = kubectl(&["apply", "-f", "-"], Some(&changed)).unwrap_err();
    assert!(error.contains("spec.secretName is immutable"), "{error}");
}

#[tokio::test]
#[ignore = "needs the control plane of `make test`"]
async fn applying_the_crds_prints_no_warning() {
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/");
    let output = toma_testkit::run(
        "kubectl",
        &["apply", "--server-side", "--force-conflicts", "-f", crds],
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("Warning"), "the API server warned: {stderr}");
}
