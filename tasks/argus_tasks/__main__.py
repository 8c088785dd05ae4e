from argus_tasks.cli import main

raise SystemExit(main())
