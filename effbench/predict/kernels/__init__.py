"""Hardware microbenchmarks (and any custom kernels) of effbench.

Installed under `effbench.predict.kernels`: a top-level `kernels` package would clash with the PyPI
package of that name. `effbench kernels` measures this machine and prints its profile.
"""
