"""The learner: :class:`~.module.PHCModule`, the LightningModule that owns the policy, the normalizers and the PPO
update (manual optimization). Its Lightning hooks call the helpers of :mod:`.iteration_hooks` and
:mod:`.evaluation_hooks`, and :mod:`.hook_check` refuses a subclass that drops one; the L2-to-init anchor
(:mod:`.l2_anchor`), warm starts and reading a policy back from a checkpoint. May import core, task (the
action interface), evaluation, rl, amp and rollout (the iteration summary's key).
"""
