"""Published figures, quoted for comparison only (other hardware, data and training budgets).

Bicubic: PSNR (dB) on Y with shave = scale, as tabulated across the SR literature (e.g. the EDSR and
LIIF papers) and in the shared data's README.
"""

BICUBIC_PSNR = {
    ("Set5", 2): 33.66, ("Set5", 3): 30.39, ("Set5", 4): 28.42,
    ("Set14", 2): 30.24, ("Set14", 3): 27.55, ("Set14", 4): 26.00,
    ("B100", 2): 29.56, ("B100", 3): 27.21, ("B100", 4): 25.96,
    ("Urban100", 2): 26.88, ("Urban100", 3): 24.46, ("Urban100", 4): 23.14,
}  # fmt: skip
