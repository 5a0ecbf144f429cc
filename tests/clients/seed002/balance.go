package main

import (
    "fmt"
    "net/http"
    "io/ioutil"
)

func main() {

    url := "https://sms.tinsight.tech/apiv2/balance"
    method := "GET"

    client := &http.Client {
    }
    req, err := http.NewRequest(method, url, nil)

    if err != nil {
    fmt.Println(err)
    return
    }
    req.Header.Add("Authorization", "Token xxxxxxxxxxxxxxxxxxxxxxxxx")

    res, err := client.Do(req)
    if err != nil {
    fmt.Println(err)
    return
    }
    defer res.Body.Close()

    body, err := ioutil.ReadAll(res.Body)
    if err != nil {
    fmt.Println(err)
    return
    }
    fmt.Println(string(body))
}
