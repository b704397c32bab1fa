"""Prediction: profiler, hardware profiles and microbenchmarks, roofline, memory fit, cost model, `effbench check`."""
