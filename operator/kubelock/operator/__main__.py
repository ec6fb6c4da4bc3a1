from kubelock.operator.launch import main

main()
