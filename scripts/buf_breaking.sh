#!/usr/bin/env bash
# `make lint`'s wire-compatibility check: protos/ must not break what clients built against the
# newest release tag (v*) can rely on; until the first tag, what main's previous commit had.
#
# An intended break is accepted by saying so in the commit that makes it, with the trailer
#   Proto-Breaking: accepted
# in its message: from that commit on, protos/ is compared with that commit instead (with a tag:
# the newest accepting commit since the tag; without one: only HEAD's own trailer matters,
# since the comparison is with the previous commit anyway). Locally,
# BUF_BREAKING_AGAINST=<git ref> compares with another ref and BUF_BREAKING_AGAINST=none skips.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=${BUF:-node_modules/.bin/buf}
TRAILER='^Proto-Breaking: accepted'
skip() { echo "buf breaking: skipped: $*"; exit 0; }

against=${BUF_BREAKING_AGAINST:-}
[ "$against" = none ] && skip "BUF_BREAKING_AGAINST=none"
git rev-parse --git-dir >/dev/null 2>&1 || skip "not a git checkout (nothing to compare with)"

if [ -z "$against" ]; then
  tag=$(git tag --list 'v*' --sort=-version:refname | head -n1)
  if [ -n "$tag" ]; then
    accepted=$(git log -1 --format=%H --grep="$TRAILER" "$tag..HEAD")
    against=${accepted:-$tag}
  elif grep -q "$TRAILER" <<<"$(git log -1 --format=%B HEAD)"; then
    against=HEAD
  else
    if ! git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null; then
      # CI's fresh clone is often shallow (depth 1): fetch the one commit the check needs.
      if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
        git fetch -q --deepen=1 2>/dev/null || skip "shallow clone and 'git fetch --deepen=1' failed"
      fi
      git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null || skip "HEAD has no parent commit"
    fi
    against=HEAD~1
  fi
fi

commit=$(git rev-parse --verify "$against^{commit}")
echo "buf breaking: protos/ against $against (${commit:0:12})"
# The common git dir holds every object, in a worktree too (where .git is only a file).
repo=$(git rev-parse --path-format=absolute --git-common-dir)
cd protos
exec "../$BUF" breaking --against "$repo#ref=$commit,subdir=protos"
