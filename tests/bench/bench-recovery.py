# SPDX-License-Identifier: Apache-2.0
"""scripts/bench recovery: runs the scenarios of tests/integration/recovery.py ROUNDS times and
prints one JSON object: max_recovery_s over all cases and rounds, the worst figure of each
case (socket_rotate_session_s, pty_kill_restart_s, ...), how the devices said they reconnected,
and whether every message acked OK was in the outbox. Never asserts a timing."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from mcugwtest import TempDir  # noqa: E402
from recovery import Setup  # noqa: E402


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    worst, reasons, failed, lost = {}, {}, [], 0
    for _ in range(rounds):
        tmp = TempDir(prefix="mcugw-bench-recovery-")
        s = None
        try:
            s = Setup(tmp)

            def report(transport, case, secs, reason):
                key = f"{transport}_{case.replace('-', '_')}_s"
                if secs is None:
                    failed.append(key)
                    return
                worst[key] = max(worst.get(key, 0.0), secs)
                r = reasons.setdefault(f"{transport}_{case.replace('-', '_')}", {})
                r[reason] = r.get(reason, 0) + 1

            s.run_cases(report)
            acked = s.acked_ok()
            s.stop()
            lost += len(acked - s.outbox())
        finally:
            if s:
                s.stop()
            tmp.cleanup()
    out = {"max_recovery_s": round(max(worst.values()), 3) if worst and not failed else None}
    out.update({k: round(v, 3) for k, v in sorted(worst.items())})
    out.update({"rounds": rounds, "budget_s": 2.0, "not_recovered": failed,
                "acked_lost": lost, "reasons": reasons})
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
