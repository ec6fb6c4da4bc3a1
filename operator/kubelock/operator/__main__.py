from kubelock.operator.main import main

main()
