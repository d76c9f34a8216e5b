"""The reinforcement-learning parts that know nothing of humanoids: PPO math as pure functions (:mod:`.ppo`), the
actor-critic MLPs (:mod:`.networks`), running normalization (:mod:`.normalization`), the LSTM policy
(:mod:`.recurrent`) and its segment minibatches (:mod:`.segments`), and what several processes must agree on
(:mod:`.distributed`). May import :mod:`phc_lightning.core` only.
"""
