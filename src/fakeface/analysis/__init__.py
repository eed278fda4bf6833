"""What evaluate measures beyond the test metrics: calibration, robustness, slices, explanations, external sets, the model card."""
