"""Feature encoders (EDSR, RDN) with the official LIIF names and state-dict keys."""

from moeisr.models.encoders.edsr import EDSREncoder, make_edsr, make_edsr_baseline
from moeisr.models.encoders.rdn import RDNEncoder, make_rdn

__all__ = ["EDSREncoder", "RDNEncoder", "make_edsr", "make_edsr_baseline", "make_rdn"]
