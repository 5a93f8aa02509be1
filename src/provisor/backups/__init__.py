"""Backup stores: where backups go, behind one small protocol (`store.BackupStore`), one
module per backend (`local_store`, `s3_store`), built by `registry`; and the envelope
encryption every stored object goes through (`crypto`).

Every call is blocking (files, boto3): the orchestrator runs them in threads.
"""
