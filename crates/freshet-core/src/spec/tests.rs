use super::*;

fn parse(text: &str) -> Result<PipelineSpec, SpecError> {
    PipelineSpec::from_toml(text, Path::new("p.toml"))
}

#[test]
fn the_documented_example_parses() {
    let text = include_str!("../../../../deploy/pipelines/foundation.toml");
    let spec = parse(text).expect("the acceptance pipeline is valid");
    assert_eq!(spec.sources.len(), 1);
    assert_eq!(spec.feature_views[0].get_ref().features.len(), 13);
}

#[test]
fn unknown_key_names_file_and_line() {
    let err = parse("[[source]]\nname = \"s\"\nentity = \"e\"\nevent_time = \"ts\"\ncolour = 1\n")
        .expect_err("unknown key");
    assert_eq!((err.file.as_path(), err.line), (Path::new("p.toml"), 5));
    assert!(err.message.contains("unknown field `colour`"), "{err}");
}

const DRIFT_SOURCE: &str = "[[source]]\nname = \"stream\"\nentity = \"id\"\nevent_time = \"ts\"\n";

fn drift(body: &str) -> Result<PipelineSpec, SpecError> {
    parse(&format!("{DRIFT_SOURCE}\n[[drift]]\nname = \"d\"\n{body}"))
}

#[test]
fn the_drift_example_parses() {
    let text = include_str!("../../../../deploy/pipelines/drift.toml");
    let spec = parse(text).expect("the drift acceptance pipeline is valid");
    let d = spec.drift[0].get_ref();
    assert_eq!(d.features, ["stream.value", "stream.category"]);
    assert_eq!(
        d.reference,
        ReferenceSpec::First {
            duration: Some(HumanDuration::from_secs(100)),
            events: None
        }
    );
    assert_eq!(d.window.as_ms(), 10_000);
    assert_eq!(d.methods, Measure::ALL);
    assert_eq!(d.alert.threshold(Measure::Ks), Some(0.001));
    assert_eq!(d.alert.threshold(Measure::Wasserstein), None);
    assert_eq!((d.alert.fire_after, d.alert.clear_after), (2, 3));
}

#[test]
fn drift_defaults_and_other_references() {
    let spec = drift(
        "features = [\"stream.v\"]\nreference = { kind = \"file\", path = \"ref.json\" }\nwindow = \"1m\"\nkinds = { v = \"categorical\" }\n",
    )
    .expect("valid");
    let d = spec.drift[0].get_ref();
    assert_eq!(d.methods, Measure::ALL);
    assert_eq!(d.alert.rule(Measure::Psi), None);
    assert_eq!(d.kinds.get("v"), Some(&DriftFieldKind::Categorical));
    drift("features = [\"stream.v\"]\nreference = { kind = \"first\", events = 10 }\nwindow = \"1m\"\n")
        .expect("valid");
}

#[test]
fn drift_unknown_method_is_named() {
    let err = drift(
        "features = [\"stream.v\"]\nreference = { kind = \"first\", events = 10 }\nwindow = \"1m\"\nmethods = [\"psi\", \"kl\"]\n",
    )
    .expect_err("unknown method");
    assert!(err.message.contains("unknown variant `kl`"), "{err}");
    assert!(
        err.message.contains("chi_square"),
        "lists the known ones: {err}"
    );
    assert_eq!(err.line, 11, "points at the methods line");
}

#[test]
fn drift_feature_must_be_source_dot_field() {
    let err = drift(
        "features = [\"value\"]\nreference = { kind = \"first\", events = 10 }\nwindow = \"1m\"\n",
    )
    .expect_err("no source");
    assert!(
        err.message
            .contains("drift `d`: feature `value`: expected `source.field`"),
        "{err}"
    );
    assert_eq!(err.line, 6, "points at the [[drift]] table");
}

#[test]
fn drift_unknown_source_lists_the_declared_ones() {
    let err = drift("features = [\"other.v\"]\nreference = { kind = \"first\", events = 10 }\nwindow = \"1m\"\n")
        .expect_err("unknown source");
    assert!(
        err.message
            .contains("reads source `other`, which is not declared (nor is such a feature view); expected one of: stream"),
        "{err}"
    );
}

#[test]
fn drift_reference_is_required_and_checked() {
    let err = drift("features = [\"stream.v\"]\nwindow = \"1m\"\n").expect_err("no reference");
    assert!(err.message.contains("missing field `reference`"), "{err}");
    let err =
        drift("features = [\"stream.v\"]\nreference = { kind = \"first\" }\nwindow = \"1m\"\n")
            .expect_err("neither duration nor events");
    assert!(err.message.contains("exactly one of duration"), "{err}");
    let err =
        drift("features = [\"stream.v\"]\nreference = { kind = \"last\" }\nwindow = \"1m\"\n")
            .expect_err("unknown kind");
    assert!(err.message.contains("unknown variant `last`"), "{err}");
    let err = drift(
        "features = [\"stream.v\"]\nreference = { kind = \"first\", events = 1, colour = 2 }\nwindow = \"1m\"\n",
    )
    .expect_err("unknown key");
    assert!(err.message.contains("colour"), "{err}");
}

#[test]
fn drift_cross_field_checks() {
    let base = "features = [\"stream.v\"]\nreference = { kind = \"first\", events = 10 }\nwindow = \"1m\"\n";
    let cases = [
        (
            "methods = [\"psi\"]\nalert = { ks_p = 0.01 }\n",
            "alert.ks_p is set but `ks` is not in methods",
        ),
        ("alert = { ks_p = 2.0 }\n", "a p-value in (0, 1)"),
        ("alert = { psi = 0.1, fire_after = 0 }\n", "at least 1"),
        ("methods = []\n", "methods is empty"),
        ("methods = [\"psi\", \"psi\"]\n", "listed twice"),
        (
            "kinds = { w = \"numeric\" }\n",
            "kinds: `w` is not the field",
        ),
    ];
    for (extra, want) in cases {
        let err = drift(&format!("{base}{extra}")).expect_err(extra);
        assert!(err.message.contains(want), "{extra}: {err}");
    }
    let err = drift("features = [\"stream.ts\"]\nreference = { kind = \"first\", events = 10 }\nwindow = \"1m\"\n")
        .expect_err("event time field");
    assert!(err.message.contains("entity or event_time"), "{err}");
    let err = parse(&format!(
        "{DRIFT_SOURCE}[[drift]]\nname = \"d\"\nfeatures = [\"stream.v\"]\nreference = {{ kind = \"first\", events = 1 }}\nwindow = \"1m\"\n[[drift]]\nname = \"d\"\nfeatures = [\"stream.v\"]\nreference = {{ kind = \"first\", events = 1 }}\nwindow = \"1m\"\n"
    ))
    .expect_err("duplicate");
    assert!(err.message.contains("duplicate drift name `d`"), "{err}");
}

const DRIFT_VIEW: &str = "[[feature_view]]\nname = \"card\"\nsource = \"stream\"\nfeatures = [{ name = \"mean_1h\", agg = \"mean\", field = \"v\", window = \"1h\" }]\n";

fn drift_with_view(body: &str) -> Result<PipelineSpec, SpecError> {
    parse(&format!(
        "{DRIFT_SOURCE}\n{DRIFT_VIEW}\n[[drift]]\nname = \"d\"\n{body}"
    ))
}

#[test]
fn drift_features_may_be_computed_features_of_a_view() {
    let spec = drift_with_view(
        "features = [\"card.mean_1h\", \"stream.v\"]\nreference = { kind = \"first\", events = 10 }\nwindow = \"1m\"\n",
    )
    .expect("valid");
    let refs: Vec<(&str, &str)> = spec.drift[0].get_ref().feature_refs().collect();
    assert_eq!(refs, [("card", "mean_1h"), ("stream", "v")]);
    let err = drift_with_view(
        "features = [\"card.sum\"]\nreference = { kind = \"first\", events = 10 }\nwindow = \"1m\"\n",
    )
    .expect_err("unknown view feature");
    assert!(
        err.message
            .contains("view `card` has no feature `sum`; expected one of: mean_1h"),
        "{err}"
    );
    // a source and a view of the same name make `name.x` ambiguous
    let err = parse(&format!(
        "{DRIFT_SOURCE}\n[[feature_view]]\nname = \"stream\"\nsource = \"stream\"\nfeatures = [{{ name = \"n\", agg = \"count\", window = \"1m\" }}]\n[[drift]]\nname = \"d\"\nfeatures = [\"stream.n\"]\nreference = {{ kind = \"first\", events = 1 }}\nwindow = \"1m\"\n"
    ))
    .expect_err("ambiguous");
    assert!(
        err.message
            .contains("names both a source and a feature view"),
        "{err}"
    );
}

#[test]
fn drift_detectors_lagged_reference_delivery_and_chi_square_test() {
    let spec = drift(
        "features = [\"stream.v\"]\nreference = { kind = \"lagged\", lag = \"1d\", duration = \"1h\" }\nwindow = \"5m\"\nmethods = [\"ks\", \"adwin\", \"page_hinkley\"]\nadwin = { delta = 0.01 }\npage_hinkley = { threshold = 80.0, mode = \"up\" }\nchi_square_test = \"two_sample\"\nalert_topic = \"freshet.alerts\"\nalert = { ks_p = 0.001, webhook = \"http://127.0.0.1:9000/hook\" }\n",
    )
    .expect("valid");
    let d = spec.drift[0].get_ref();
    assert_eq!(
        d.reference,
        ReferenceSpec::Lagged {
            lag: HumanDuration::from_secs(86_400),
            duration: HumanDuration::from_secs(3_600)
        }
    );
    assert_eq!(d.window_measures().collect::<Vec<_>>(), [Measure::Ks]);
    assert_eq!(
        d.detectors().collect::<Vec<_>>(),
        [Measure::Adwin, Measure::PageHinkley]
    );
    assert_eq!(d.detector_parameter(Measure::Adwin), Some(0.01));
    assert_eq!(d.detector_parameter(Measure::PageHinkley), Some(80.0));
    assert_eq!(d.adwin.clock, freshet_drift::adwin::DEFAULT_CLOCK);
    assert_eq!(d.page_hinkley.mode, freshet_drift::PageHinkleyMode::Up);
    assert_eq!(d.chi_square_test, freshet_drift::ChiSquareMethod::TwoSample);
    assert_eq!(d.alert_topic.as_deref(), Some("freshet.alerts"));
    assert_eq!(
        d.alert.webhook.as_deref(),
        Some("http://127.0.0.1:9000/hook")
    );
}

#[test]
fn drift_new_fields_are_checked() {
    let base = "features = [\"stream.v\"]\nwindow = \"10m\"\n";
    let first = "reference = { kind = \"first\", events = 10 }\n";
    let cases = [
        (
            "reference = { kind = \"lagged\", lag = \"5m\", duration = \"1h\" }\n",
            "lag and duration must be whole multiples of window",
        ),
        (
            "reference = { kind = \"lagged\", lag = \"1h\", duration = \"15m\" }\n",
            "whole multiples",
        ),
        (
            "reference = { kind = \"lagged\", lag = \"100d\", duration = \"1d\" }\n",
            "windows of history, at most 10000",
        ),
        (
            "reference = { kind = \"lagged\", lag = \"1h\" }\n",
            "missing field `duration`",
        ),
        ("adwin = { delta = 1.5 }\n", "adwin: "),
        ("page_hinkley = { alpha = 0.0 }\n", "page_hinkley: "),
        ("page_hinkley = { lambda = 3 }\n", "unknown field `lambda`"),
        ("chi_square_test = \"exact\"\n", "unknown variant `exact`"),
        (
            "alert = { webhook = \"https://example.com/x\" }\n",
            "https is not supported",
        ),
        ("alert = { webhook = \"http:///x\" }\n", "no host"),
        (
            "alert_topic = \"bad topic\"\n",
            "alert_topic: expected a Kafka topic name",
        ),
    ];
    for (extra, want) in cases {
        let body = if extra.starts_with("reference") {
            format!("{base}{extra}")
        } else {
            format!("{base}{first}{extra}")
        };
        let err = drift(&body).expect_err(extra);
        assert!(err.message.contains(want), "{extra}: {err}");
    }
}

#[test]
fn model_stream_features_are_told_apart_from_sources_and_views() {
    assert_eq!(
        model_stream_ref("model.fraud.score"),
        Some(("fraud", "score"))
    );
    assert_eq!(
        model_stream_ref("model.fraud.error"),
        Some(("fraud", "error"))
    );
    assert_eq!(model_stream_ref("model.fraud.loss"), None);
    assert_eq!(model_stream_ref("model..score"), None);
    assert_eq!(model_stream_ref("transactions.amount"), None);
    let model = "[[model]]\nname = \"fraud\"\nkind = \"logistic_regression\"\nfeatures = [\"stream.v\"]\nlabel = { field = \"y\" }\n";
    let spec = drift_with_view(&format!(
        "features = [\"model.fraud.error\", \"stream.v\", \"card.mean_1h\"]\nreference = {{ kind = \"first\", events = 10 }}\nwindow = \"1m\"\n\n{model}"
    ))
    .expect("valid");
    let d = spec.drift[0].get_ref();
    assert_eq!(d.model_refs().collect::<Vec<_>>(), [("fraud", "error")]);
    assert_eq!(
        d.feature_refs().collect::<Vec<_>>(),
        [("stream", "v"), ("card", "mean_1h")]
    );
    let err = drift_with_view(&format!(
        "features = [\"model.nope.score\"]\nreference = {{ kind = \"first\", events = 10 }}\nwindow = \"1m\"\n\n{model}"
    ))
    .expect_err("unknown model");
    assert!(
        err.message
            .contains("reads model `nope`, which is not declared; expected one of: fraud"),
        "{err}"
    );
}

const SERVING_BASE: &str = r#"[kafka]
brokers = "127.0.0.1:9092"

[[source]]
name = "transactions"
entity = "card_id"
event_time = "ts"

[[model]]
name = "fraud"
kind = "logistic_regression"
features = ["transactions.amount"]
label = { field = "y" }
"#;

fn serving(body: &str) -> Result<PipelineSpec, SpecError> {
    parse(&format!("{SERVING_BASE}\n[[serving]]\n{body}"))
}

#[test]
fn serving_tables_parse_with_their_defaults() {
    let spec = serving(
        "name = \"f\"\nmodel = \"fraud\"\nrequest_topic = \"fraud.requests\"\nresponse_topic = \"fraud.responses\"\n\n[[serving]]\nname = \"q\"\nkind = \"features\"\nrequest_topic = \"fq\"\nresponse_topic = \"fr\"\ndead_letter_topic = \"dl\"\nbatch_size = 8\nmax_in_flight = 64\n",
    )
    .expect("valid");
    let f = spec.serving[0].get_ref();
    assert_eq!(f.kind, ServingKind::Predict);
    assert_eq!(f.dead_letter_topic(), "fraud.requests.dead_letter");
    assert_eq!(
        (f.batch_size, f.max_in_flight, f.log_features),
        (
            serving::DEFAULT_SERVING_BATCH,
            serving::DEFAULT_MAX_IN_FLIGHT,
            true
        )
    );
    let q = spec.serving[1].get_ref();
    assert_eq!(
        (q.kind, q.batch_size, q.dead_letter_topic().as_str()),
        (ServingKind::Features, 8, "dl")
    );
}

#[test]
fn serving_errors_name_the_line_and_what_was_expected() {
    let line_of_table = SERVING_BASE.lines().count() + 2;
    let cases = [
        ("name = \"f\"\nrequest_topic = \"a\"\nresponse_topic = \"b\"\n", "needs model"),
        ("name = \"f\"\nmodel = \"nope\"\nrequest_topic = \"a\"\nresponse_topic = \"b\"\n", "model `nope` is not a [[model]]; expected one of: fraud"),
        ("name = \"f\"\nkind = \"features\"\nmodel = \"fraud\"\nrequest_topic = \"a\"\nresponse_topic = \"b\"\n", "takes no model"),
        ("name = \"f\"\nmodel = \"fraud\"\nrequest_topic = \"a\"\nresponse_topic = \"a\"\n", "must differ"),
        ("name = \"f\"\nmodel = \"fraud\"\nrequest_topic = \"a b\"\nresponse_topic = \"b\"\n", "request_topic: expected a Kafka topic name"),
        ("name = \"f\"\nmodel = \"fraud\"\nrequest_topic = \"a\"\nresponse_topic = \"b\"\nbatch_size = 0\n", "batch_size must be at least 1"),
        ("name = \"f\"\nmodel = \"fraud\"\nrequest_topic = \"a\"\nresponse_topic = \"b\"\nbatch_size = 10\nmax_in_flight = 5\n", "max_in_flight (5) must be at least batch_size (10)"),
    ];
    for (body, want) in cases {
        let err = serving(body).expect_err(body);
        assert!(err.message.contains(want), "{body}: {err}");
        assert_eq!(err.line, line_of_table, "{err}");
        assert!(err.to_string().starts_with("p.toml:"), "{err}");
    }
    let err = serving("name = \"f\"\nmodel = \"fraud\"\nrequest_topic = \"a\"\nresponse_topic = \"b\"\nretries = 3\n")
        .expect_err("unknown key");
    assert!(err.message.contains("unknown field `retries`"), "{err}");
    assert_eq!(err.line, line_of_table + 5, "{err}");
    let err = parse("[[serving]]\nname = \"f\"\nkind = \"features\"\nrequest_topic = \"a\"\nresponse_topic = \"b\"\n")
        .expect_err("no kafka");
    assert!(err.message.contains("add a [kafka] section"), "{err}");
}
