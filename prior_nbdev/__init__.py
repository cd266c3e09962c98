__version__ = "0.1.0"

# The package's public names, re-exported from the chapters that define them (nbdev writes the modules from nbs/).
from .schedule import *
from .transformer import *
from .network import *
from .prior import *
from .sampling import *
from .arithmetic import *
from .data import *
from .legacy import *
from .checkpoint import *
from .trainer import *
from .metrics import *
from .clip import *
from .train import *
