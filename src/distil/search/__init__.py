"""Student architecture search without training (DisWOT)."""

from distil.search.diswot import diswot_score, kendall_tau, signature
from distil.search.rank import RankedCandidate, rank_candidates

__all__ = ["RankedCandidate", "diswot_score", "kendall_tau", "rank_candidates", "signature"]
