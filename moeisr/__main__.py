from moeisr.cli import main

raise SystemExit(main())
