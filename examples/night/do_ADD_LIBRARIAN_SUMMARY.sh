#!/bin/bash
# Per chunk: upload its summary. Inside a job `obsflow upload` sends the run, the job and its inputs as the new
# file's produced_by; the scheduler gives every job a token of its own (OBSFLOW_TOKEN).
set -euo pipefail
exec obsflow upload "${1%.uvh5}.summary.json" --type summary
