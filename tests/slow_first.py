"""Tests that take long, with about how many seconds each took (one `--durations` run with four workers
on two cores, other test runs beside it). conftest.py runs them first, longest first (docs/testing.md).

The figures only order the start: no test asserts on them. A test missing here merely starts in its
collection place; refresh the list from `pytest -n 4 --durations=60` when a slow test is added."""

SLOW_FIRST: dict[str, int] = {
    "tests/eval/test_eval_bundled.py::test_one_dialogue_is_played_judged_appraised_and_reported_on_the_bundled_model": 168,
    "tests/replicas/test_processes.py::test_three_processes_discord_shards_and_telegram_webhooks_one_killed_mid_reply": 48,
    "tests/replicas/test_processes.py::test_two_polling_processes_elect_one_poller_and_the_standby_takes_over_when_it_is_killed": 44,
    "tests/faults/test_faults.py::test_sigkill_mid_reply_on_telegram_then_restart_answers_every_message_once": 44,
    "tests/faults/test_faults.py::test_sigkill_mid_reply_on_discord_then_restart_answers_every_message_once": 39,
    "tests/faults/test_faults.py::test_postgres_stopped_for_20_s_keeps_shown_replies_and_loses_no_message": 36,
    "tests/engine/test_embedded_model.py::test_a_killed_model_server_is_reported_in_one_sentence_and_restarted_once": 31,
    "tests/faults/test_faults.py::test_a_flood_in_a_telegram_group_is_rate_limited_and_starves_no_one": 30,
    "tests/replicas/test_redis_outage_sweep.py::test_redis_outage_sweep": 27,
    "tests/faults/test_faults.py::test_sigterm_mid_reply_drains_exits_0_and_loses_nothing": 26,
    "tests/engine/test_embedded_model.py::test_a_console_chat_on_the_embedded_defaults_reaches_no_host_but_this_one": 25,
    "tests/test_cli_errors.py::test_db_upgrade_migrates_an_empty_postgres_database": 23,
    "tests/test_crash_recovery.py::test_a_reply_cut_by_sigkill_is_completed_in_place_after_the_restart": 23,
    "tests/faults/test_faults.py::test_a_first_token_later_than_the_gap_between_pieces_is_waited_for_without_a_second_request": 22,
    "tests/faults/test_faults.py::test_lone_surrogate_in_a_message_is_answered_and_stored": 18,
    "tests/test_bench_processes.py::test_two_processes_never_exceed_the_global_cap_at_the_double": 18,
    "tests/faults/test_faults.py::test_redis_killed_mid_run_loses_nothing": 17,
    "tests/faults/test_faults.py::test_redis_frozen_mid_run_loses_nothing": 17,
    "tests/faults/test_faults.py::test_nul_byte_in_a_message_is_answered_and_stored": 16,
    "tests/engine/test_embedded_model.py::test_a_model_server_killed_mid_reply_is_reported_and_the_next_turn_is_answered": 16,
    "tests/faults/test_faults.py::test_model_server_sending_endless_text_gives_one_bounded_reply": 13,
    "tests/faults/test_faults.py::test_a_malformed_gateway_interaction_does_not_take_the_process_down": 12,
    "tests/engine/test_llama_engine.py::test_a_turn_streams_text_is_stored_and_history_survives_a_restart": 11,
    "tests/test_service_drain.py::test_a_stop_signal_lets_the_replies_in_flight_finish_stores_them_and_exits_0": 10,
    "tests/test_cli_errors.py::test_run_with_a_taken_metrics_port_or_a_twin_replica_id_stops_with_one_line_exit_78": 10,
    "tests/test_cli_errors.py::test_run_with_discord_unreachable_is_one_line": 9,
    "tests/llm/test_llama.py::test_the_servers_output_goes_to_its_log_file_one_start_after_another": 9,
    "tests/telegram/test_database_outage.py::test_a_reply_shown_while_the_database_is_down_is_stored_when_it_is_back": 9,
    "tests/test_cli_errors.py::test_a_database_host_that_never_answers_is_one_line": 9,
    "tests/telegram/test_poll_conflict.py::test_repeated_409_conflicts_are_named_once_and_make_the_adapter_unready": 9,
    "tests/test_cli_errors.py::test_a_sqlite_database_is_created_by_the_first_command": 9,
    "tests/observe/test_run_serves_metrics.py::test_personae_run_serves_metrics_health_and_json_logs": 8,
    "tests/test_doctor.py::test_on_a_fresh_clone_the_bundled_model_is_started_and_checked": 8,
    "tests/test_cli_errors.py::test_a_bad_model_url_is_one_line_for_derive": 8,
    "tests/eval/test_eval_double.py::test_a_stored_character_is_evaluated_by_name": 8,
    "tests/test_cli_startup.py::test_run_says_what_it_connected_to_and_how_to_invite_the_bot": 8,
}
