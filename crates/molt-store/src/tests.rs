use super::*;

fn temp_store() -> (tempdir::Dir, Store) {
    let dir = tempdir::Dir::new();
    let store = Store::open(&dir.0.join("molt.db")).unwrap();
    (dir, store)
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("molt-store-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn exec(cmd: &str) -> StepSpec {
    StepSpec::Exec(ExecSpec {
        command: cmd.into(),
        args: vec![],
        env: Default::default(),
        cwd: None,
        timeout_ms: None,
    })
}

fn ok() -> StepOutcome {
    StepOutcome::Succeeded {
        exit_code: 0,
        output_tail: String::new(),
    }
}

#[test]
fn migrations_and_boot_epochs() {
    let (dir, mut store) = temp_store();
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    let a = store.begin_boot(1, "1.0.0", "b").unwrap();
    let b = store.begin_boot(2, "1.0.0", "b").unwrap();
    assert!(b.epoch > a.epoch);
    drop(store);
    // Re-opening does not re-run migrations and keeps the epoch.
    let mut store = Store::open(&dir.0.join("molt.db")).unwrap();
    assert_eq!(store.boot_epoch().unwrap(), Some(b.epoch));
    assert_eq!(store.begin_boot(3, "1", "b").unwrap().epoch, b.epoch + 1);
    assert_eq!(store.quick_check().unwrap(), Ok(()));
}

#[test]
fn newer_schema_is_refused() {
    let (dir, store) = temp_store();
    store.conn.pragma_update(None, "user_version", 999).unwrap();
    drop(store);
    let err = Store::open(&dir.0.join("molt.db")).err().unwrap();
    assert!(
        matches!(err, StoreError::TooNew { found: 999, .. }),
        "{err}"
    );
}

#[test]
fn run_lifecycle_two_steps() {
    let (_d, mut store) = temp_store();
    let boot = store.begin_boot(10, "1", "b").unwrap();
    let id = store
        .create_run(Some("t"), &[exec("a"), exec("b")], None)
        .unwrap();
    assert_eq!(store.get_run(&id.0).unwrap().state, RunState::Queued);
    assert_eq!(store.claim_next(boot).unwrap(), Some(id.clone()));
    assert_eq!(store.claim_next(boot).unwrap(), None);
    let s0 = store.start_step(&id, boot).unwrap().unwrap();
    assert_eq!(
        (s0.index, s0.attempts, s0.state),
        (0, 1, StepState::Running)
    );
    assert_eq!(
        store.finish_step(&id, 0, boot, &ok()).unwrap(),
        RunState::Running
    );
    let s1 = store.start_step(&id, boot).unwrap().unwrap();
    assert_eq!(s1.index, 1);
    assert_eq!(s1.effect_key, format!("{id}:1"));
    assert_eq!(
        store.finish_step(&id, 1, boot, &ok()).unwrap(),
        RunState::Succeeded
    );
    let run = store.get_run(&id.0).unwrap();
    assert_eq!(run.state, RunState::Succeeded);
    assert!(run.lease.is_none());
    assert_eq!(store.run_counts().unwrap().succeeded, 1);
}

#[test]
fn dead_epoch_is_requeued_and_attempt_counted() {
    let (_d, mut store) = temp_store();
    let old = store.begin_boot(10, "1", "b").unwrap();
    let id = store.create_run(None, &[exec("a")], None).unwrap();
    store.claim_next(old).unwrap();
    store.start_step(&id, old).unwrap();
    // The process dies here. The next boot re-queues the run.
    let new = store.begin_boot(11, "1", "b").unwrap();
    assert_eq!(
        store.requeue_dead_leases(new.epoch, |_, _| false).unwrap(),
        vec![id.clone()]
    );
    let run = store.get_run(&id.0).unwrap();
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.steps[0].state, StepState::Pending);
    assert!(
        run.steps[0]
            .error
            .as_deref()
            .unwrap()
            .contains("interrupted")
    );
    store.claim_next(new).unwrap();
    let step = store.start_step(&id, new).unwrap().unwrap();
    assert_eq!(step.attempts, 2);
    // The old process cannot checkpoint a step it no longer leases.
    let err = store.finish_step(&id, 0, old, &ok()).unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    store.finish_step(&id, 0, new, &ok()).unwrap();
}

#[test]
fn keep_epochs_are_not_requeued() {
    let (_d, mut store) = temp_store();
    let old = store.begin_boot(10, "1", "b").unwrap();
    let id = store.create_run(None, &[exec("a")], None).unwrap();
    store.claim_next(old).unwrap();
    let new = store.begin_boot(11, "1", "b").unwrap();
    assert!(
        store
            .requeue_dead_leases(new.epoch, |pid, _| pid == old.pid)
            .unwrap()
            .is_empty()
    );
    store.release_run(&id, old, "handover").unwrap();
    assert_eq!(store.claim_next(new).unwrap(), Some(id));
}

#[test]
fn idempotent_create_and_cancel() {
    let (_d, mut store) = temp_store();
    let a = store.create_run(None, &[exec("a")], Some("k1")).unwrap();
    let b = store.create_run(None, &[exec("a")], Some("k1")).unwrap();
    assert_eq!(a, b);
    assert_eq!(store.list_runs(None, 10).unwrap().len(), 1);
    assert_eq!(store.request_cancel(&a.0).unwrap(), RunState::Cancelled);
    assert_eq!(
        store.get_run(&a.0).unwrap().steps[0].state,
        StepState::Cancelled
    );
    assert!(matches!(
        store.request_cancel("run_nope"),
        Err(StoreError::NoSuchRun(_))
    ));
    let boot = store.begin_boot(1, "1", "b").unwrap();
    let c = store.create_run(None, &[exec("a")], None).unwrap();
    store.claim_next(boot).unwrap();
    assert_eq!(store.request_cancel(&c.0).unwrap(), RunState::Running);
    assert!(store.cancel_requested(&c).unwrap());
}

#[test]
fn device_pairing() {
    let (_d, mut store) = temp_store();
    let scopes = vec!["operator.read".to_string()];
    let req = DeviceRequest {
        id: "dev1",
        public_key: "pk",
        client_id: "cli",
        platform: "linux",
        role: "operator",
        scopes: &scopes,
        remote: "10.0.0.1",
    };
    let d = store.request_pairing(&req).unwrap();
    assert_eq!(d.state, Pairing::Pending);
    assert_eq!(d.scopes, scopes);
    assert!(
        !store.device_token_matches("dev1", "tok").unwrap(),
        "pending"
    );
    let d = store.approve_device("dev1", Some("tok")).unwrap().unwrap();
    assert_eq!(d.state, Pairing::Approved);
    assert!(store.device_token_matches("dev1", "tok").unwrap());
    assert!(!store.device_token_matches("dev1", "tok2").unwrap());
    // Only the digest is at rest.
    let stored: String = store
        .conn
        .query_row("SELECT token FROM devices WHERE id = 'dev1'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(stored, molt_protocol::device::token_digest("tok"));
    store.issue_device_token("dev1", "tok2").unwrap();
    assert!(store.device_token_matches("dev1", "tok2").unwrap());
    assert!(
        !store.device_token_matches("dev1", "tok").unwrap(),
        "replaced"
    );
    // A new request from an approved device does not reset it to pending.
    assert_eq!(
        store.request_pairing(&req).unwrap().state,
        Pairing::Approved
    );
    assert_eq!(
        store.reject_device("dev1").unwrap().unwrap().state,
        Pairing::Rejected
    );
    assert!(
        !store.device_token_matches("dev1", "tok2").unwrap(),
        "rejected"
    );
    assert!(store.approve_device("nope", None).unwrap().is_none());
    assert_eq!(store.list_devices().unwrap().len(), 1);
}

#[test]
fn dead_lease_sweep_requeues_only_dead_holders() {
    let (_d, mut store) = temp_store();
    let parent = store.begin_boot(100, "1", "b").unwrap();
    let live = store.begin_boot(200, "1", "b").unwrap();
    let a = store.create_run(None, &[exec("a")], None).unwrap();
    let b = store.create_run(None, &[exec("b")], None).unwrap();
    store.claim_next(parent).unwrap();
    store.claim_next(live).unwrap();
    let me = store.begin_boot(300, "1", "b").unwrap();
    let swept = store
        .requeue_dead_leases(me.epoch, |pid, _| pid == 200)
        .unwrap();
    assert_eq!(swept, vec![a.clone()]);
    assert_eq!(store.get_run(&a.0).unwrap().state, RunState::Queued);
    assert_eq!(store.get_run(&b.0).unwrap().state, RunState::Running);
}

#[test]
fn plaintext_device_tokens_from_older_databases_become_digests_at_open() {
    let (d, mut store) = temp_store();
    let scopes = vec!["operator.read".to_string()];
    let req = DeviceRequest {
        id: "old",
        public_key: "pk",
        client_id: "cli",
        platform: "linux",
        role: "operator",
        scopes: &scopes,
        remote: "127.0.0.1",
    };
    store.request_pairing(&req).unwrap();
    // What an older build wrote: the token itself.
    store
        .conn
        .execute(
            "UPDATE devices SET state = 'approved', token = 'legacy-secret' WHERE id = 'old'",
            [],
        )
        .unwrap();
    drop(store);
    let store = Store::open(&d.0.join("molt.db")).unwrap();
    let stored: String = store
        .conn
        .query_row("SELECT token FROM devices WHERE id = 'old'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(stored, molt_protocol::device::token_digest("legacy-secret"));
    assert!(store.device_token_matches("old", "legacy-secret").unwrap());
}

mod agent_turns {
    use super::*;
    use molt_protocol::transcript::{
        AssistantMessage, ContentBlock, Message, StopReason, TextBlock, ToolResultMessage, Usage,
    };

    fn answer(text: &str, tool: Option<&str>) -> Message {
        let mut content = vec![ContentBlock::Text { text: text.into() }];
        if let Some(id) = tool {
            content.push(ContentBlock::ToolCall {
                id: id.into(),
                name: "exec".into(),
                arguments: serde_json::json!({"command": "true"}),
            });
        }
        Message::Assistant(AssistantMessage {
            content,
            api: "openai-completions".into(),
            provider: "fake".into(),
            model: "fake-1".into(),
            usage: Usage {
                input: 3,
                output: 2,
                total_tokens: 5,
                ..Usage::default()
            },
            stop_reason: if tool.is_some() {
                StopReason::ToolUse
            } else {
                StopReason::Stop
            },
            timestamp: 1,
            response_id: None,
        })
    }

    fn turn<'a>(run: &'a str, text: &'a str, mode: QueueMode) -> NewTurn<'a> {
        NewTurn {
            run_id: run,
            session_key: "agent:main:main",
            agent_id: "main",
            text,
            mode,
            origin: "chat",
        }
    }

    #[test]
    fn a_turn_with_a_tool_call_checkpoints_every_boundary() {
        let (_d, mut s) = temp_store();
        let boot = s.begin_boot(1, "v", "b").unwrap();
        assert_eq!(
            s.submit_turn(&turn("r1", "hello", QueueMode::Steer), None)
                .unwrap(),
            Submitted::Queued
        );
        // Not in the transcript until its first model step starts.
        assert!(s.transcript("agent:main:main").unwrap().is_empty());
        let run = s.claim_next_turn(boot).unwrap().unwrap();
        assert_eq!(run.0, "r1");
        let (step, moved) = s.start_turn_step(&run, boot).unwrap().unwrap();
        assert_eq!(step.spec, StepSpec::Model {});
        assert_eq!(moved.len(), 1);
        let (_, p) = s
            .finish_model_step(&run, 0, boot, &answer("", Some("call_1")), 7)
            .unwrap();
        assert_eq!(p, TurnProgress::Continues);
        let (step, moved) = s.start_turn_step(&run, boot).unwrap().unwrap();
        assert!(moved.is_empty());
        assert!(matches!(step.spec, StepSpec::Tool { ref call_id, .. } if call_id == "call_1"));
        assert_eq!(step.effect_key, "r1:1");
        let result = Message::ToolResult(ToolResultMessage {
            tool_call_id: "call_1".into(),
            tool_name: "exec".into(),
            content: vec![TextBlock { text: "ok".into() }],
            details: serde_json::json!({}),
            is_error: false,
            timestamp: 2,
        });
        s.finish_tool_step(&run, 1, boot, &result, 9).unwrap();
        let (step, _) = s.start_turn_step(&run, boot).unwrap().unwrap();
        assert_eq!(step.index, 2);
        let (_, p) = s
            .finish_model_step(&run, 2, boot, &answer("done", None), 12)
            .unwrap();
        assert_eq!(p, TurnProgress::Finished);
        let t = s.turn("r1").unwrap().unwrap();
        assert_eq!(t.state, RunState::Succeeded);
        assert_eq!(t.final_text.as_deref(), Some("done"));
        assert_eq!(t.event_seq, 12);
        assert_eq!(t.usage.total_tokens, 10);
        let roles: Vec<&str> = s
            .transcript("agent:main:main")
            .unwrap()
            .iter()
            .map(|m| match m {
                Message::User(_) => "user",
                Message::Assistant(_) => "assistant",
                Message::ToolResult(_) => "tool",
                Message::System(_) => "system",
            })
            .collect();
        assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
        assert_eq!(
            s.session("agent:main:main").unwrap().unwrap().total_tokens,
            10
        );
        // A repeated runId starts nothing.
        assert!(matches!(
            s.submit_turn(&turn("r1", "hello", QueueMode::Steer), None).unwrap(),
            Submitted::Duplicate(t) if t.state == RunState::Succeeded
        ));
    }

    #[test]
    fn steer_joins_the_active_turn_followup_waits_and_a_stale_boot_records_nothing() {
        let (_d, mut s) = temp_store();
        let old = s.begin_boot(1, "v", "b").unwrap();
        s.submit_turn(&turn("r1", "one", QueueMode::Steer), None)
            .unwrap();
        let run = s.claim_next_turn(old).unwrap().unwrap();
        s.start_turn_step(&run, old).unwrap().unwrap();
        assert_eq!(
            s.submit_turn(&turn("r2", "two", QueueMode::Steer), None)
                .unwrap(),
            Submitted::Steered { into: "r1".into() }
        );
        assert_eq!(
            s.submit_turn(&turn("r3", "three", QueueMode::Followup), None)
                .unwrap(),
            Submitted::Queued
        );
        // One turn at a time per session.
        assert_eq!(s.claim_next_turn(old).unwrap(), None);
        // The steer input makes the turn take another model step after this one.
        let (_, p) = s
            .finish_model_step(&run, 0, old, &answer("a", None), 3)
            .unwrap();
        assert_eq!(p, TurnProgress::Continues);
        let (_, moved) = s.start_turn_step(&run, old).unwrap().unwrap();
        assert_eq!(moved.len(), 1);
        // Another boot cannot checkpoint the step.
        let new = s.begin_boot(2, "v", "b").unwrap();
        assert!(matches!(
            s.finish_model_step(&run, 1, new, &answer("b", None), 4),
            Err(StoreError::LeaseLost { .. })
        ));
        s.release_run(&run, old, "handover").unwrap();
        let again = s.claim_next_turn(new).unwrap().unwrap();
        assert_eq!(again, run);
        let (step, moved) = s.start_turn_step(&run, new).unwrap().unwrap();
        assert!(moved.is_empty());
        assert_eq!(step.attempts, 2, "the interrupted model step runs again");
        s.finish_model_step(&run, 1, new, &answer("b", None), 5)
            .unwrap();
        assert_eq!(s.claim_next_turn(new).unwrap().unwrap().0, "r3");
    }

    #[test]
    fn a_turn_for_an_idle_session_starts_in_the_submitting_commit() {
        let (_d, mut s) = temp_store();
        let boot = s.begin_boot(1, "v", "b").unwrap();
        let Submitted::Started(started) = s
            .submit_turn(&turn("r1", "hi", QueueMode::Steer), Some(boot))
            .unwrap()
        else {
            panic!("an idle session's turn starts at once");
        };
        assert_eq!((started.step.index, started.step.attempts), (0, 1));
        assert_eq!(started.moved.len(), 1, "its message is in the transcript");
        let run = s.get_run("r1").unwrap();
        assert_eq!(run.state, RunState::Running);
        assert_eq!(run.lease.map(|l| l.epoch), Some(boot.epoch));
        assert_eq!(run.steps[0].state, StepState::Running);
        // A busy session's next turn waits, whatever the caller offers.
        assert_eq!(
            s.submit_turn(&turn("r2", "next", QueueMode::Followup), Some(boot))
                .unwrap(),
            Submitted::Queued
        );
        assert_eq!(s.claim_next_turn(boot).unwrap(), None);
        let (_, p) = s
            .finish_model_step(&RunId("r1".into()), 0, boot, &answer("a", None), 1)
            .unwrap();
        assert_eq!(p, TurnProgress::Finished);
        assert_eq!(s.claim_next_turn(boot).unwrap().unwrap().0, "r2");
    }

    #[test]
    fn reset_keeps_the_old_transcript_and_delete_removes_it() {
        let (_d, mut s) = temp_store();
        let k = "agent:main:x";
        s.ensure_session(k, "main").unwrap();
        let first = s.session(k).unwrap().unwrap().session_id;
        for i in 0..5 {
            s.append_message(k, None, &answer(&format!("m{i}"), None))
                .unwrap();
        }
        let (page, more, total) = s.history(k, 2, None).unwrap();
        assert_eq!((page.len(), more, total), (2, true, 5));
        assert_eq!(page[1].seq, 5);
        let (older, _, _) = s.history(k, 10, Some(page[0].seq)).unwrap();
        assert_eq!(older.len(), 3);
        let (sess, marker) = s.reset_session(k).unwrap();
        assert_ne!(sess.session_id, first);
        assert!(matches!(marker.message, Message::System(ref m) if m.kind == "reset"));
        assert_eq!(s.history(k, 10, None).unwrap().2, 1);
        let kept: i64 = s
            .conn
            .query_row(
                "SELECT COUNT(*) FROM messages WHERE session_id = ?1",
                [&first],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kept, 5);
        assert!(s.delete_session(k).unwrap());
        assert!(s.session(k).unwrap().is_none());
        let left: i64 = s
            .conn
            .query_row(
                "SELECT COUNT(*) FROM messages WHERE session_key = ?1",
                [k],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
    }
}

mod approvals_and_turn_updates {
    use super::*;
    use crate::{ApprovalState, Delivery, NewApproval, NewUpdateJob, TurnOrigin, UpdateKind};
    use molt_protocol::transcript::{Message, UserMessage};

    fn new<'a>(key: &'a str) -> NewApproval<'a> {
        NewApproval {
            effect_key: key,
            run_id: "r1",
            session_key: "agent:main:main",
            agent_id: "main",
            tool: "exec",
            command: "rm -rf build",
            cwd: None,
            reason: "always",
        }
    }

    #[test]
    fn one_approval_per_effect_key_decided_once() {
        let (_d, mut s) = temp_store();
        let a = s.request_approval(&new("r1:1")).unwrap();
        assert_eq!(a.state, ApprovalState::Pending);
        assert!(a.id.starts_with("apr-"));
        let again = s.request_approval(&new("r1:1")).unwrap();
        assert_eq!(
            again.id, a.id,
            "a re-run of the step finds the same approval"
        );
        assert_eq!(s.list_approvals(true, 10).unwrap().len(), 1);
        let d = s.decide_approval(&a.id, true, "cli").unwrap();
        assert_eq!(d.state, ApprovalState::Approved);
        let e = s.decide_approval(&a.id, false, "cli").unwrap_err();
        assert!(e.to_string().contains("already approved"), "{e}");
        assert!(s.list_approvals(true, 10).unwrap().is_empty());
        assert!(matches!(
            s.decide_approval("apr-nope", true, "cli"),
            Err(StoreError::NoSuchApproval(_))
        ));
    }

    #[test]
    fn an_update_asked_for_by_a_tool_step_is_created_and_delivered_once() {
        let (_d, mut s) = temp_store();
        let job = NewUpdateJob {
            kind: UpdateKind::Update,
            requester: "agent".into(),
            params: "{}".into(),
            continuation: Some("back".into()),
            origin: Some(TurnOrigin {
                effect_key: "run-a:1".into(),
                session_key: "agent:main:main".into(),
                agent_id: "main".into(),
            }),
        };
        let (j1, created) = s.create_update_job_once(&job).unwrap();
        assert!(created);
        let (j2, created) = s.create_update_job_once(&job).unwrap();
        assert!(!created, "the same effect key starts no second job");
        assert_eq!(j1.id, j2.id);
        assert_eq!(j2.origin, job.origin);
        let msg = Message::User(UserMessage {
            content: "done".into(),
            timestamp: 1,
            idempotency_key: None,
        });
        assert_eq!(
            s.deliver_update(&j1.id, &msg).unwrap(),
            Delivery::NotNow,
            "a running job is not delivered"
        );
        s.set_update_state(&j1.id, crate::JobState::Ok, None)
            .unwrap();
        assert_eq!(s.undelivered_turn_updates().unwrap().len(), 1);
        let Delivery::Now {
            session_message: Some(m),
        } = s.deliver_update(&j1.id, &msg).unwrap()
        else {
            panic!("delivered with a session message");
        };
        assert_eq!(m.seq, 1);
        assert_eq!(s.deliver_update(&j1.id, &msg).unwrap(), Delivery::NotNow);
        assert!(s.undelivered_turn_updates().unwrap().is_empty());
        assert_eq!(s.history("agent:main:main", 10, None).unwrap().0.len(), 1);
    }
}

mod cron_fires {
    use super::*;
    use crate::{Claimed, CronJobFields, FireAction, FireClaim, FireOutcome};
    use molt_protocol::methods::tasks::ExecSpec;

    fn claim(job: &str, at: i64, next: i64) -> FireClaim {
        FireClaim {
            job_id: job.into(),
            job_name: "tick".into(),
            scheduled_at_ms: at,
            trigger: "scheduled",
            action: FireAction::Exec {
                title: "cron tick".into(),
                step: StepSpec::Exec(ExecSpec {
                    command: "true".into(),
                    args: vec![],
                    env: Default::default(),
                    cwd: None,
                    timeout_ms: None,
                }),
            },
            next_run_at_ms: Some(Some(next)),
        }
    }

    #[test]
    fn a_scheduled_time_fires_once_with_its_run_and_the_job_advances() {
        let (_d, mut s) = temp_store();
        let job = s
            .cron_add(&CronJobFields {
                name: "tick",
                agent_id: "main",
                enabled: true,
                spec: "{}",
                next_run_at_ms: Some(1000),
            })
            .unwrap();
        assert_eq!(s.cron_due(999, 10).unwrap().len(), 0);
        assert_eq!(s.cron_due(1000, 10).unwrap().len(), 1);
        let out = s.claim_cron_fires(&[claim(&job.id, 1000, 2000)]).unwrap();
        let Claimed::Fired { run_id: Some(run) } = &out[0] else {
            panic!("fired with a run: {out:?}");
        };
        assert_eq!(s.get_run(run).unwrap().state, RunState::Queued);
        assert_eq!(
            s.cron_job(&job.id).unwrap().unwrap().next_run_at_ms,
            Some(2000)
        );
        // A second process claiming the same time: nothing happens.
        let again = s.claim_cron_fires(&[claim(&job.id, 1000, 2000)]).unwrap();
        assert_eq!(again, vec![Claimed::AlreadyFired]);
        assert_eq!(s.cron_fires(Some(&job.id), 10, 0).unwrap().1, 1);
        assert!(
            s.cron_ended_fires().unwrap().is_empty(),
            "its run has not ended"
        );
        // The run ends: the fire is recorded once.
        let boot = s.begin_boot(10, "1", "b").unwrap();
        let id = s.claim_next(boot).unwrap().expect("the fire's run");
        let step = s.start_step(&id, boot).unwrap().unwrap();
        s.finish_step(&id, step.index, boot, &ok()).unwrap();
        let ended = s.cron_ended_fires().unwrap();
        assert_eq!(ended.len(), 1);
        let o = FireOutcome {
            status: "ok",
            error: None,
            summary: None,
            finished_at_ms: ended[0].finished_at_ms,
            consecutive_errors: 0,
            next_run_at_ms: None,
            delete_job: false,
            disable_job: false,
        };
        assert!(s.finish_cron_fire(&job.id, 1000, &o).unwrap());
        assert!(!s.finish_cron_fire(&job.id, 1000, &o).unwrap(), "once");
        let j = s.cron_job(&job.id).unwrap().unwrap();
        assert_eq!(j.last_status.as_deref(), Some("ok"));
        assert!(s.cron_remove(&job.id).unwrap());
        assert_eq!(
            s.claim_cron_fires(&[claim(&job.id, 2000, 3000)]).unwrap(),
            vec![Claimed::NoJob]
        );
    }
}

#[test]
fn a_discord_message_delivered_twice_starts_one_turn() {
    let (_dir, mut store) = temp_store();
    let msg = DiscordInbound {
        message_id: "900",
        channel_id: "c1",
        author_id: "u1",
    };
    let turn = NewTurn {
        run_id: "discord-900",
        session_key: "agent:main:main",
        agent_id: "main",
        text: "hi",
        mode: QueueMode::Followup,
        origin: "discord",
    };
    assert!(store.discord_accept(&msg, &turn, Some(5)).unwrap());
    assert!(!store.discord_accept(&msg, &turn, Some(6)).unwrap());
    assert_eq!(store.discord_session().unwrap().unwrap().seq, 6);
    assert!(store.turn("discord-900").unwrap().is_some());
    // Not due until the turn ends.
    assert!(store.discord_replies_due(10).unwrap().is_empty());
    assert_eq!(store.discord_open_turns().unwrap().len(), 1);
}

#[test]
fn discord_replies_are_claimed_once_and_a_dead_claim_is_taken_over() {
    let (_dir, mut store) = temp_store();
    let a = store.begin_boot(std::process::id(), "0", "b").unwrap();
    let b = store.begin_boot(std::process::id(), "0", "b").unwrap();
    let id = store.discord_queue_message("c1", "hello", "n1").unwrap();
    let got = store
        .discord_claim_outbound(a.epoch, 10, |_, _| true)
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].id, got[0].attempts), (id, 1));
    // Held by a live boot: nobody else takes it.
    assert!(
        store
            .discord_claim_outbound(b.epoch, 10, |_, _| true)
            .unwrap()
            .is_empty()
    );
    store.discord_outbound_progress(id, 1, "m1").unwrap();
    // Its boot died: the next one resumes after the chunk already posted.
    let again = store
        .discord_claim_outbound(b.epoch, 10, |_, _| false)
        .unwrap();
    assert_eq!((again[0].chunks_sent, again[0].attempts), (1, 2));
    store.discord_outbound_end(id, "sent", None).unwrap();
    assert!(
        store
            .discord_claim_outbound(a.epoch, 10, |_, _| false)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_discord_send_is_queued_once_per_idempotency_key_and_keeps_its_message_ids() {
    let (_dir, mut store) = temp_store();
    let a = store.begin_boot(std::process::id(), "0", "b").unwrap();
    let QueuedSend::New(id) = store.discord_queue_send("k1", "c1", "hello", "s1").unwrap() else {
        panic!("a new key queues a row")
    };
    // The same key finds the same row; with another channel or text it is refused.
    assert_eq!(
        store.discord_queue_send("k1", "c1", "hello", "s1").unwrap(),
        QueuedSend::Existing(id)
    );
    assert_eq!(
        store.discord_queue_send("k1", "c2", "hello", "s1").unwrap(),
        QueuedSend::Conflict {
            channel_id: "c1".into()
        }
    );
    assert!(matches!(
        store.discord_queue_send("k2", "c1", "hello", "s2").unwrap(),
        QueuedSend::New(other) if other != id
    ));
    // The unique index holds even for a writer that skips the lookup.
    assert!(
        store
            .conn
            .execute(
                "INSERT INTO discord_outbound
                     (channel_id, content, nonce, send_key, state, created_at_ms, updated_at_ms)
                 VALUES ('c1', 'hello', 's1', 'k1', 'pending', 0, 0)",
                [],
            )
            .is_err()
    );

    let got = store
        .discord_claim_outbound(a.epoch, 10, |_, _| true)
        .unwrap();
    assert_eq!(got.len(), 2, "one row per key");
    assert_eq!((got[0].id, got[0].nonce.as_str()), (id, "s1"));
    let status = store.discord_outbound_status(id).unwrap().unwrap();
    assert_eq!(status.state, "sending");
    assert!(status.message_ids.is_empty());
    // Each chunk's id is recorded once, in order, even if its progress is recorded twice.
    store.discord_outbound_progress(id, 1, "m1").unwrap();
    store.discord_outbound_progress(id, 1, "m1").unwrap();
    store.discord_outbound_progress(id, 2, "m2").unwrap();
    store.discord_outbound_end(id, "sent", None).unwrap();
    let status = store.discord_outbound_status(id).unwrap().unwrap();
    assert_eq!(
        (status.state.as_str(), status.message_ids),
        ("sent", vec!["m1".to_owned(), "m2".to_owned()])
    );
    // Once sent, the key still finds the row: nothing is queued or claimed again.
    assert_eq!(
        store.discord_queue_send("k1", "c1", "hello", "s1").unwrap(),
        QueuedSend::Existing(id)
    );
    assert!(
        store
            .discord_claim_outbound(a.epoch + 1, 10, |_, _| false)
            .unwrap()
            .iter()
            .all(|o| o.id != id)
    );
    assert!(store.discord_outbound_status(id + 100).unwrap().is_none());
}

#[test]
fn discord_pairing_codes_are_capped_and_approval_admits_the_sender() {
    let (_dir, mut store) = temp_store();
    let mut n = 0;
    let mut code = || {
        n += 1;
        format!("CODE{n:04}")
    };
    let mut outcomes = Vec::new();
    for (i, user) in ["u1", "u1", "u2", "u3", "u4"].iter().enumerate() {
        let id = format!("m{i}");
        let msg = DiscordInbound {
            message_id: &id,
            channel_id: "dm",
            author_id: user,
        };
        outcomes.push(
            store
                .discord_pairing_request(&msg, user, 3_600_000, 3, None, &mut code)
                .unwrap(),
        );
    }
    assert_eq!(
        outcomes,
        vec![
            PairingOutcome::Created("CODE0001".into()),
            PairingOutcome::Pending("CODE0001".into()),
            PairingOutcome::Created("CODE0002".into()),
            PairingOutcome::Created("CODE0003".into()),
            PairingOutcome::Full,
        ]
    );
    assert_eq!(store.discord_pairing_list().unwrap().len(), 3);
    assert!(!store.discord_is_approved("u2").unwrap());
    let r = store.discord_pairing_approve("code0002").unwrap().unwrap();
    assert_eq!(r.user_id, "u2");
    assert!(store.discord_is_approved("u2").unwrap());
    assert!(store.discord_pairing_approve("CODE0002").unwrap().is_none());
    assert_eq!(store.discord_pairing_list().unwrap().len(), 2);

    // Dismissed: not approved, and its place is free for the sender who was turned away.
    let r = store
        .discord_pairing_dismiss(" code0003 ")
        .unwrap()
        .unwrap();
    assert_eq!(r.user_id, "u3");
    assert!(!store.discord_is_approved("u3").unwrap());
    assert!(store.discord_pairing_dismiss("CODE0003").unwrap().is_none());
    assert!(store.discord_pairing_approve("CODE0003").unwrap().is_none());
    let msg = DiscordInbound {
        message_id: "m9",
        channel_id: "dm",
        author_id: "u4",
    };
    assert_eq!(
        store
            .discord_pairing_request(&msg, "u4", 3_600_000, 3, None, &mut code)
            .unwrap(),
        PairingOutcome::Created("CODE0004".into())
    );
}

#[test]
fn the_discord_session_has_one_owner_at_a_time() {
    let (_dir, mut store) = temp_store();
    assert!(store.discord_claim_session(1, None).unwrap());
    assert!(!store.discord_claim_session(2, None).unwrap());
    store
        .discord_save_session(1, Some(("s1", 42, "ws://x")), true)
        .unwrap();
    let s = store.discord_session().unwrap().unwrap();
    assert_eq!(
        (s.session_id.as_deref(), s.seq, s.owner_epoch),
        (Some("s1"), 42, None)
    );
    assert!(store.discord_claim_session(2, None).unwrap());
    // The old owner can no longer write.
    store.discord_save_session(1, None, true).unwrap();
    assert_eq!(
        store.discord_session().unwrap().unwrap().owner_epoch,
        Some(2)
    );
}

mod import {
    use super::*;
    use molt_protocol::transcript::{Message, UserMessage};

    fn user(text: &str, ts: i64) -> Message {
        Message::User(UserMessage {
            content: text.into(),
            timestamp: ts,
            idempotency_key: None,
        })
    }

    fn session(n: usize) -> ImportedSession {
        ImportedSession {
            key: "agent:main:main".into(),
            agent_id: "main".into(),
            session_id: "s-1".into(),
            label: None,
            model: None,
            created_at_ms: 1,
            updated_at_ms: 2,
            messages: (0..n).map(|i| user(&format!("m{i}"), i as i64)).collect(),
        }
    }

    fn batch(s: ImportedSession) -> ImportBatch {
        ImportBatch {
            origin: "openclaw".into(),
            sessions: vec![s],
            cron_jobs: vec![ImportedCronJob {
                id: "job-1".into(),
                name: "j".into(),
                agent_id: "main".into(),
                enabled: true,
                spec: "{}".into(),
                next_run_at_ms: Some(5),
                created_at_ms: 1,
            }],
        }
    }

    fn outcome(r: &ImportResult) -> (SessionOutcome, JobOutcome) {
        (r.sessions[0].1.clone(), r.cron_jobs[0].1.clone())
    }

    #[test]
    fn a_second_import_appends_only_what_is_new_and_a_dry_run_writes_nothing() {
        let (_d, mut s) = temp_store();
        let dry = s.import_batch(&batch(session(2)), false).unwrap();
        assert_eq!(outcome(&dry).0, SessionOutcome::New { messages: 2 });
        assert!(
            s.session("agent:main:main").unwrap().is_none(),
            "a dry run wrote"
        );
        let r = s.import_batch(&batch(session(2)), true).unwrap();
        assert_eq!(
            outcome(&r),
            (SessionOutcome::New { messages: 2 }, JobOutcome::New)
        );
        let r = s.import_batch(&batch(session(2)), true).unwrap();
        assert_eq!(
            outcome(&r),
            (SessionOutcome::Unchanged, JobOutcome::Unchanged)
        );
        let r = s.import_batch(&batch(session(3)), true).unwrap();
        assert_eq!(outcome(&r).0, SessionOutcome::Appended { messages: 1 });
        let texts: Vec<String> = s
            .transcript("agent:main:main")
            .unwrap()
            .into_iter()
            .map(|m| match m {
                Message::User(u) => u.content,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(texts, ["m0", "m1", "m2"]);
    }

    #[test]
    fn conversations_that_moved_on_in_molt_or_were_deleted_are_left_alone() {
        let (_d, mut s) = temp_store();
        s.import_batch(&batch(session(2)), true).unwrap();
        s.append_message("agent:main:main", None, &user("said in molt", 9))
            .unwrap();
        let r = s.import_batch(&batch(session(3)), true).unwrap();
        assert!(
            matches!(outcome(&r).0, SessionOutcome::Skipped { ref reason } if reason.contains("both"))
        );
        assert_eq!(s.transcript("agent:main:main").unwrap().len(), 3);

        s.delete_session("agent:main:main").unwrap();
        s.cron_remove("job-1").unwrap();
        let r = s.import_batch(&batch(session(3)), true).unwrap();
        assert!(
            matches!(outcome(&r).0, SessionOutcome::Skipped { ref reason } if reason.contains("deleted"))
        );
        assert!(matches!(outcome(&r).1, JobOutcome::Skipped { .. }));
        assert!(s.session("agent:main:main").unwrap().is_none());
        assert!(s.cron_job("job-1").unwrap().is_none());

        // A session molt made itself is not overwritten by an import of the same key.
        let (_d, mut s) = temp_store();
        s.ensure_session("agent:main:main", "main").unwrap();
        let r = s.import_batch(&batch(session(2)), true).unwrap();
        assert!(matches!(outcome(&r).0, SessionOutcome::Skipped { .. }));
        assert!(s.transcript("agent:main:main").unwrap().is_empty());
    }
}
