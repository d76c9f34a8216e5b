"""The learner: :class:`~.module.PHCModule`, the LightningModule that owns the policy, the normalizers and the PPO
update (manual optimization), with its iteration hooks (:mod:`.iteration_hooks`) and evaluation hooks
(:mod:`.evaluation_hooks`); warm starts and reading a policy back from a checkpoint. May import core, task (the
action interface), evaluation, rl, amp and rollout (the iteration summary's key).
"""
