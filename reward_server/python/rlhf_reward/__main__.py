"""python -m rlhf_reward: the command line (rlhf_reward.cli)."""

from .cli import main

raise SystemExit(main())
