"""Bottleneck (Houlsby / Pfeiffer) adapters as a peft method — see issue 7."""
