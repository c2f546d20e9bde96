#!/usr/bin/env bash
# Debian's Slurm, MUNGE, and slurmdbd with MariaDB (sacct reads the accounting database), for
# the one-node test cluster (workflow/slurm/cluster.sh).
# Idempotent: does nothing when the daemons and clients are already installed.
set -euo pipefail

NEEDED=(munged slurmctld slurmd slurmdbd sbatch sacct sacctmgr squeue scontrol mariadbd mariadb-install-db)
missing() { for tool in "${NEEDED[@]}"; do command -v "$tool" >/dev/null 2>&1 || { echo "$tool"; return 0; }; done; return 1; }

if ! missing >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "workflow/slurm/install.sh: slurm-wlm, slurmdbd, munge or mariadb-server are missing ($(missing)) and only root can apt-get install them" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# no recommends: the daemons and clients only, not the docs and extras
apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd munge mariadb-server >/dev/null
if missing >/dev/null; then
    echo "workflow/slurm/install.sh: installed the packages, yet $(missing) is not on PATH" >&2
    exit 1
fi
