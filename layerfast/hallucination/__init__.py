"""Side path, hallucination analysis: EAVSS scores (statistics of wrong vs right answers),
contrastive fine-tuning of chosen blocks, and the controlled top-k / bottom-k / random-k experiment.
"""
