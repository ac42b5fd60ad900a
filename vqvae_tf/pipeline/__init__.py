"""The main job: every stage in order, resumable (`pipeline_lib`), and its REPORT.md (`report`)."""
