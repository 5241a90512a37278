from .cli import main
from .utils.dist import exit_process

exit_process(main())
