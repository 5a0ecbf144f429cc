import requests

url = "https://sms.tinsight.tech/apiv2/verify_code/"

payload={'phone_number': 'XXXXXXXXX','code': 'XXXXXX'}

headers = {
    'Authorization': 'Token xxxxxxxxxxxxxxxxxxxxxxxxx'
}

response = requests.request("POST", url, headers=headers, data=payload)

print(response.text)
